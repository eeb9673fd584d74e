// Consumes orders.fifo through an event-source mapping with ReportBatchItemFailures:
// returns the messages it could not process in `batchItemFailures`, so only those come back.
//
// FIFO rule: once a message of a group fails, the later messages of that group in the batch
// are not processed (that would break the group's order) and are reported as failed too;
// other groups go on. Nimbus (like Lambda) also keeps them as failed if a function forgets.
exports.handler = async (event) => {
  const failed = new Set(); // message groups with a failed message in this batch
  const batchItemFailures = [];
  for (const record of event.Records) {
    const group = record.attributes.MessageGroupId;
    if (failed.has(group)) {
      console.log(`skipped ${record.messageId} of ${group}: an earlier order of the group failed`);
      batchItemFailures.push({ itemIdentifier: record.messageId });
      continue;
    }
    try {
      const order = JSON.parse(record.body);
      if (order.bad) throw new Error("order flagged as bad");
      console.log(`processed order ${order.id} of ${group} (receive ${record.attributes.ApproximateReceiveCount})`);
    } catch (e) {
      console.log(`failed ${record.messageId} of ${group}: ${e.message}`);
      failed.add(group);
      batchItemFailures.push({ itemIdentifier: record.messageId });
    }
  }
  return { batchItemFailures };
};
