#!/usr/bin/env node
// Publishes orders to RabbitMQ the way a shop would: to the exchange amq.topic with the
// routing key orders.new, persistent, with publisher confirms. Not part of the functions
// (amqplib is a devDependency: `npm install` here; Nimbus's deploy omits it).
//
//   node publish-orders.mjs                       # 20 random orders, 2 of them invalid
//   node publish-orders.mjs --count 200 --invalid 10 --duplicates 5
//   echo '{"id":"o-1","customer":"c-1","items":[{"sku":"a","qty":1,"price":5}],"total":5}' \
//     | node publish-orders.mjs -                 # the JSON orders on stdin, one a line
//
// Options: --url (default amqp://guest:guest@127.0.0.1:5672/%2f, or $AMQP_URL),
// --exchange (amq.topic), --routing-key (orders.new).
import amqp from "amqplib";
import { randomInt } from "node:crypto";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string", default: process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f" },
    exchange: { type: "string", default: "amq.topic" },
    "routing-key": { type: "string", default: "orders.new" },
    count: { type: "string", default: "20" },
    invalid: { type: "string", default: "2" },
    duplicates: { type: "string", default: "0" },
  },
});

const SKUS = { "sku-apple": 0.5, "sku-bread": 2.25, "sku-cheese": 7.9, "sku-wine": 12.0, "sku-free-bag": 0 };
const CUSTOMERS = ["alice", "bob", "carol", "dave", "erin", "frank"];
const cents = (x) => Math.round(x * 100);

function order(id) {
  const skus = Object.keys(SKUS);
  const items = Array.from({ length: randomInt(1, 4) }, () => {
    const sku = skus[randomInt(skus.length)];
    return { sku, qty: randomInt(1, 6), price: SKUS[sku] };
  });
  const total = items.reduce((sum, i) => sum + i.qty * cents(i.price), 0) / 100;
  return { id, customer: CUSTOMERS[randomInt(CUSTOMERS.length)], items, total };
}

// Ways an order can be wrong, one per invalid order in turn.
const BREAK = [
  (o) => ({ ...o, total: o.total + 1 }), // the total is not the sum
  (o) => ({ ...o, items: [{ ...o.items[0], qty: 0 }] }), // qty must be > 0
  (o) => ({ ...o, customer: "" }), // no customer
  (o) => ({ ...o, items: [{ ...o.items[0], price: -1 }], total: -o.items[0].qty }), // a negative price
  (o) => ({ ...o, items: [] }), // nothing ordered
];

async function generated() {
  const run = Date.now().toString(36);
  const count = Number(opts.count);
  const invalid = Number(opts.invalid);
  const orders = Array.from({ length: count }, (_, n) => order(`o-${run}-${n + 1}`));
  // Spread the invalid ones over the run.
  for (let k = 0; k < invalid && k < count; k++) {
    const at = Math.floor(((k + 0.5) * count) / invalid);
    orders[at] = BREAK[k % BREAK.length](orders[at]);
  }
  // A sender's retry: the same order (same id) published again.
  for (let k = 0; k < Number(opts.duplicates) && count > 0; k++) {
    orders.push(orders[randomInt(count)]);
  }
  return orders;
}

async function fromStdin() {
  const orders = [];
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim()) orders.push(JSON.parse(line));
  }
  return orders;
}

const orders = positionals[0] === "-" ? await fromStdin() : await generated();
const conn = await amqp.connect(opts.url);
const ch = await conn.createConfirmChannel();
let unroutable = 0;
ch.on("return", () => (unroutable += 1));
for (const o of orders) {
  ch.publish(opts.exchange, opts["routing-key"], Buffer.from(JSON.stringify(o)), {
    persistent: true,
    mandatory: true, // an order no queue takes comes back instead of being dropped
    contentType: "application/json",
    messageId: typeof o.id === "string" ? o.id : undefined,
  });
}
await ch.waitForConfirms();
await conn.close();
console.log(`published ${orders.length} orders to ${opts.exchange} with routing key ${opts["routing-key"]}`);
if (unroutable > 0) {
  console.error(
    `${unroutable} orders reached no queue: is \`nimbus up\` running (its mapping declares and binds the queue orders)?`,
  );
  process.exit(1);
}
