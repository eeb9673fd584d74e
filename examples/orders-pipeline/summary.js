// summary: consumes PostgreSQL's change stream of the table orders (inserts only: DynamoDB
// Streams-style records) and recomputes customer_summary for the customers in the batch.
//
// The summary is computed from the orders table itself, not added up from the records, so
// a replayed batch (at least once) writes the same rows again.
const { pool } = require("./db");

const UPSERT = `
  INSERT INTO customer_summary (customer, orders, revenue, updated_at)
  SELECT customer, count(*), sum(total), now()
    FROM orders
   WHERE customer = ANY($1::text[])
   GROUP BY customer
  ON CONFLICT (customer) DO UPDATE
     SET orders = EXCLUDED.orders, revenue = EXCLUDED.revenue, updated_at = EXCLUDED.updated_at`;

exports.handler = async (event) => {
  const customers = new Set();
  for (const r of event.Records || []) {
    const c = r.dynamodb?.NewImage?.customer?.S;
    if (r.eventName === "INSERT" && c) customers.add(c);
  }
  if (customers.size === 0) return {};
  const res = await pool().query(UPSERT, [[...customers]]);
  console.log(`summarised ${res.rowCount} customers from ${event.Records.length} new orders`);
  return {};
};
