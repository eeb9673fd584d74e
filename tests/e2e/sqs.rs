//! The SQS suite (`tests/python/test_sqs.py`): unmodified boto3 (SQS's JSON protocol), the
//! AWS CLI and raw SigV4-signed query-protocol requests against `nimbus serve`'s main
//! listener — queue lifecycle, attributes, tags and listing; messages with attributes and
//! their MD5s; batches; long polling; visibility timeouts and delays; dead-letter queues and
//! StartMessageMoveTask; sizes, receipt handles and malformed bodies; both error shapes;
//! `sqs:*` authorisation per queue; a mapped function receiving SQS-sent attributes; sends
//! acknowledged before a SIGKILL received after the restart.

use nimbus_tests::*;

#[test]
fn boto3_aws_cli_and_query_protocol_suite() {
    let stdout = python::pytest(&["tests/python/test_sqs.py"]);
    println!("{stdout}");
}
