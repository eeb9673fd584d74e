//! Execution roles (`tests/python/test_iam.py`): the IAM API with unmodified boto3 (role
//! lifecycle, inline policies, tags, pagination, IAM's errors, `iam:*` authorisation), and
//! functions using their role's temporary credentials with unmodified `boto3.client("s3")`
//! and `boto3.client("sqs")` at their private endpoint: allowed and denied per the role,
//! no credentials without a role, session tokens required, credentials refused once the
//! instance stops or the role is deleted, policy changes applied to a live instance, the
//! host's ports unreachable from the instance's namespace, and manifest roles.

use nimbus_tests::*;

#[test]
fn iam_api_and_role_credentials_suite() {
    let stdout = python::pytest(&["tests/python/test_iam.py"]);
    println!("{stdout}");
}
