// validate: consumes the RabbitMQ queue `orders` (Lambda's Amazon MQ for RabbitMQ event:
// base64 message bodies under rmqMessagesByQueue) and puts each valid order on the event
// bus as an `OrderValidated` event of source `orders`; the rule `valid-orders` sends those
// to the NATS subject orders.valid.
//
// An invalid order (or one the bus did not take) is reported in `batchItemFailures`: the
// mapping retries only those records and, after its retries, sends them to the queue
// `rejected-orders` with Lambda's invocation record. Valid orders of the same batch are
// acknowledged.
//
// The EventBridge client is the unmodified AWS SDK for JavaScript v3; it takes the role's
// temporary credentials and the private endpoint (AWS_ENDPOINT_URL) from the environment.
const { EventBridgeClient, PutEventsCommand } = require("@aws-sdk/client-eventbridge");

const events = new EventBridgeClient({});
const PUT_EVENTS_MAX = 10; // entries per PutEvents call

// Why `order` is not a valid order, or null. Money is compared in cents.
function problem(order) {
  if (typeof order !== "object" || order === null || Array.isArray(order)) return "not an object";
  if (typeof order.id !== "string" || !order.id) return "id must be a non-empty string";
  if (typeof order.customer !== "string" || !order.customer) return "customer must be a non-empty string";
  if (!Array.isArray(order.items) || order.items.length === 0) return "items must be a non-empty list";
  let cents = 0;
  for (const [i, item] of order.items.entries()) {
    if (typeof item !== "object" || item === null) return `items[${i}] is not an object`;
    if (typeof item.sku !== "string" || !item.sku) return `items[${i}].sku must be a non-empty string`;
    if (!Number.isInteger(item.qty) || item.qty <= 0) return `items[${i}].qty must be a positive integer`;
    if (typeof item.price !== "number" || !Number.isFinite(item.price) || item.price < 0) {
      return `items[${i}].price must be a number >= 0`;
    }
    cents += item.qty * Math.round(item.price * 100);
  }
  if (typeof order.total !== "number" || Math.round(order.total * 100) !== cents) {
    return `total must be the sum of qty × price (${(cents / 100).toFixed(2)})`;
  }
  return null;
}

exports.handler = async (event) => {
  const failures = [];
  const valid = []; // { eventID, order }
  for (const [queue, messages] of Object.entries(event.rmqMessagesByQueue || {})) {
    for (const m of messages) {
      let order;
      try {
        order = JSON.parse(Buffer.from(m.data, "base64").toString("utf8"));
      } catch {
        console.log(`rejected ${m.eventID} from ${queue}: the body is not JSON`);
        failures.push(m.eventID);
        continue;
      }
      const why = problem(order);
      if (why) {
        console.log(`rejected order ${order?.id ?? "?"} (${m.eventID}): ${why}`);
        failures.push(m.eventID);
        continue;
      }
      valid.push({ eventID: m.eventID, order });
    }
  }

  let put = 0;
  for (let i = 0; i < valid.length; i += PUT_EVENTS_MAX) {
    const chunk = valid.slice(i, i + PUT_EVENTS_MAX);
    let out;
    try {
      out = await events.send(
        new PutEventsCommand({
          Entries: chunk.map(({ order }) => ({
            Source: "orders",
            DetailType: "OrderValidated",
            Detail: JSON.stringify(order),
          })),
        }),
      );
    } catch (e) {
      // The bus did not answer: these orders are retried with the batch's failures.
      console.log(`PutEvents failed for ${chunk.length} orders: ${e.name}: ${e.message}`);
      failures.push(...chunk.map((v) => v.eventID));
      continue;
    }
    // PutEvents answers entry by entry, in order.
    out.Entries.forEach((entry, j) => {
      if (entry.ErrorCode) {
        console.log(`the bus refused order ${chunk[j].order.id}: ${entry.ErrorCode} ${entry.ErrorMessage}`);
        failures.push(chunk[j].eventID);
      } else {
        put += 1;
      }
    });
  }
  console.log(`validated ${put} orders, ${failures.length} failed`);
  return { batchItemFailures: failures.map((itemIdentifier) => ({ itemIdentifier })) };
};
