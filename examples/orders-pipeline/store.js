// store: consumes the JetStream subject orders.valid, where the event bus rule
// `valid-orders` publishes each `OrderValidated` event (the whole EventBridge envelope, the
// order being its `detail`), and writes the orders to PostgreSQL.
//
// Delivery is at least once (a retried validate batch or a redelivered NATS message brings
// an order again), so the insert does nothing for an id that is already there.
const { pool } = require("./db");

const INSERT = `
  INSERT INTO orders (id, customer, total, items)
  SELECT o.id, o.customer, o.total, o.items
    FROM jsonb_to_recordset($1::jsonb) AS o(id text, customer text, total numeric, items jsonb)
  ON CONFLICT (id) DO NOTHING`;

exports.handler = async (event) => {
  const orders = new Map(); // id -> order: one row per id even within a batch
  for (const r of event.Records || []) {
    let order;
    try {
      order = JSON.parse(Buffer.from(r.data, "base64").toString("utf8")).detail;
    } catch {
      order = undefined;
    }
    if (!order || typeof order.id !== "string") {
      // Not an order event: retrying cannot change that, so it is logged and skipped.
      console.log(`skipped record ${r.eventID} on ${r.subject}: it holds no order`);
      continue;
    }
    orders.set(order.id, {
      id: order.id,
      customer: order.customer,
      total: order.total,
      items: order.items,
    });
  }
  if (orders.size > 0) {
    // One statement for the batch: either every order is written, or the call fails and
    // the mapping retries the batch (until PostgreSQL is back: no retry limit is set).
    const res = await pool().query(INSERT, [JSON.stringify([...orders.values()])]);
    console.log(`stored ${res.rowCount} new orders of ${orders.size} (${event.Records.length} records)`);
  }
  return {};
};
