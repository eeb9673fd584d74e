//! The Lambda-compatibility suite in `tests/python` (pytest driving unmodified boto3 and the
//! AWS CLI against the real binary), run as part of `cargo nextest run --workspace`. The S3,
//! SQS and Step Functions suites in the same folder run on their own (`s3.rs`, `sqs.rs`,
//! `stepfunctions.rs`), and the examples' from `examples.rs`.

use nimbus_tests::*;

#[test]
fn python_boto3_and_aws_cli_suite() {
    // pytest, boto3 and the AWS CLI, installed into target/test-python on first use.
    let stdout = python::pytest(&[
        "tests/python",
        "--ignore=tests/python/test_s3.py",
        "--ignore=tests/python/test_sqs.py",
        "--ignore=tests/python/test_stepfunctions_api.py",
        "--ignore=tests/python/test_flows_conformance.py",
        // The examples run from examples.rs (some need the brokers' setup first).
        "--ignore=tests/python/test_examples.py",
        "--ignore=tests/python/test_example_iot.py",
        "--ignore=tests/python/test_example_orders.py",
        "--ignore=tests/python/test_example_order_workflow.py",
    ]);
    // Echo pytest's summary so the nextest output shows what ran.
    println!("{stdout}");
}
