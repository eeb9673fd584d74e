//! The Step Functions suites: `tests/python/test_stepfunctions_api.py` (boto3 and the AWS CLI
//! against every API operation, the AWS error codes, history paging, task tokens, `states:*`
//! authorisation) and `tests/python/test_flows_conformance.py` (the table-driven ASL
//! conformance cases of `tests/flows-conformance`, run through the API).

use nimbus_tests::*;

#[test]
fn step_functions_api_suite() {
    let stdout = python::pytest(&["tests/python/test_stepfunctions_api.py"]);
    println!("{stdout}");
}

#[test]
fn step_functions_conformance_suite() {
    let stdout = python::pytest(&["tests/python/test_flows_conformance.py"]);
    println!("{stdout}");
}
