//! The examples of issue 15 (`tests/python/test_examples.py`): each served by `nimbus up` on
//! a copy of it, as its README says, and driven as a user would — webhook-to-queue's signed
//! POSTs through the AWS SDK for JavaScript v3 to a FIFO queue and its worker's partial
//! batch failures, and what its role refuses; thumbnailer's uploads under `in/` turned into
//! 128-px thumbnails by Pillow through boto3 with its role's credentials, and the reads its
//! role refuses. Needs npm and pip (and their registries, or their caches) for the first
//! run; later runs reuse target/test-python/build-cache.

use nimbus_tests::*;

#[test]
fn examples_suite() {
    let stdout = python::pytest(&["tests/python/test_examples.py"]);
    println!("{stdout}");
}

/// `examples/iot-telemetry` (issue 16) against the machine's Mosquitto and PostgreSQL:
/// 3,000 MQTT readings folded per device and minute in few invocations, duplicates
/// counted once, alerts from PostgreSQL's change stream notified once over MQTT.
#[test]
fn iot_telemetry() {
    nimbus_tests::brokers::ensure_logical_postgres();
    let stdout = python::pytest(&["tests/python/test_example_iot.py"]);
    println!("{stdout}");
}

/// `examples/orders-pipeline` (issue 16) against the machine's RabbitMQ, NATS and
/// PostgreSQL: orders validated, put on the bus, published to JetStream through a target,
/// stored once, summarised from the change stream; invalid ones in the rejected queue.
#[test]
fn orders_pipeline() {
    nimbus_tests::brokers::ensure_logical_postgres();
    let stdout = python::pytest(&["tests/python/test_example_orders.py"]);
    println!("{stdout}");
}

/// `examples/order-workflow` (issue 17): validate → Choice → Parallel (reserve ‖ charge,
/// retried with backoff) → Map over the line items → an approval through a task token on a
/// queue answered with `aws stepfunctions send-task-success` → Catch to compensation.
#[test]
fn order_workflow() {
    let stdout = python::pytest(&["tests/python/test_example_order_workflow.py"]);
    println!("{stdout}");
}
