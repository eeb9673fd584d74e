// POST /webhook: checks the sender's HMAC-SHA256 signature over the raw body and queues the
// order on the FIFO queue orders.fifo, one message group per customer.
//
// The SQS client is the unmodified AWS SDK for JavaScript v3 (installed from package.json
// when Nimbus deploys the function). It finds everything in the environment Nimbus gives
// the instance, as on Lambda: the role's temporary credentials (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), AWS_REGION and AWS_ENDPOINT_URL (the
// instance's private endpoint). No endpoint or key is written here.
const crypto = require("node:crypto");
const { SQSClient, GetQueueUrlCommand, SendMessageCommand } = require("@aws-sdk/client-sqs");

const QUEUE = process.env.QUEUE_NAME || "orders.fifo";
const sqs = new SQSClient({});
let queueUrl; // looked up once per instance

const reply = (statusCode, body) => ({
  statusCode,
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

// `X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, compared in constant time.
function signatureOk(raw, header, secret) {
  const m = /^sha256=([0-9a-f]{64})$/i.exec((header || "").trim());
  if (!m || !secret) return false;
  const given = Buffer.from(m[1], "hex");
  const expected = crypto.createHmac("sha256", secret).update(raw).digest();
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

exports.handler = async (event) => {
  const headers = event.headers || {}; // HTTP API events have lower-case header names
  const raw = Buffer.from(event.body || "", event.isBase64Encoded ? "base64" : "utf8");
  if (!signatureOk(raw, headers["x-signature"], process.env.WEBHOOK_SECRET)) {
    console.log("rejected: bad or missing X-Signature");
    return reply(401, { message: "invalid signature" });
  }
  let order;
  try {
    order = JSON.parse(raw.toString("utf8"));
  } catch {
    return reply(400, { message: "the body is not JSON" });
  }
  if (typeof order !== "object" || order === null || typeof order.customer !== "string" || !order.customer) {
    return reply(400, { message: "an order needs a string `customer`" });
  }
  queueUrl ??= (await sqs.send(new GetQueueUrlCommand({ QueueName: QUEUE }))).QueueUrl;
  const sent = await sqs.send(
    new SendMessageCommand({
      QueueUrl: queueUrl,
      MessageBody: raw.toString("utf8"),
      // Orders of one customer are processed one at a time, in the order they came.
      MessageGroupId: order.customer,
      // A sender retrying a delivery is not queued twice; without a delivery id the queue
      // deduplicates by content (ContentBasedDeduplication).
      MessageDeduplicationId: headers["x-delivery-id"] || undefined,
    }),
  );
  console.log(`queued order ${order.id} of ${order.customer} as ${sent.MessageId}`);
  return reply(202, { messageId: sent.MessageId, sequenceNumber: sent.SequenceNumber });
};
