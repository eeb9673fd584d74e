//! The S3 suite (`tests/python/test_s3.py`): unmodified boto3 and the AWS CLI against
//! `nimbus serve --s3-listen` — buckets, objects with metadata, DeleteObjects, CopyObject,
//! listing thousands of keys, ranges and preconditions, a 20 MiB multipart upload,
//! presigned URLs, virtual hosts, signatures and scoped keys, `aws s3 sync` (with a multipart
//! file), a 100 MiB transfer-manager upload, uploads after empty PUTs on kept-alive
//! connections (botocore and `Expect: 100-continue`), bucket CORS
//! (configuration, browser preflights, a presigned PUT with `Origin`) and lifecycle
//! configurations, and objects acknowledged before a SIGKILL read back after the restart.

use nimbus_tests::*;

#[test]
fn boto3_and_aws_cli_suite() {
    let stdout = python::pytest(&["tests/python/test_s3.py"]);
    println!("{stdout}");
}

/// Bucket notifications (`tests/python/test_s3_notifications.py`): the configuration API,
/// S3's records to a function and a queue, EventBridge's events to a bus rule.
#[test]
fn bucket_notifications_suite() {
    let stdout = python::pytest(&["tests/python/test_s3_notifications.py"]);
    println!("{stdout}");
}
