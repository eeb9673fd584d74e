//! The examples of issue 15 (`tests/python/test_examples.py`): each served by `nimbus up` on
//! a copy of it, as its README says, and driven as a user would — webhook-to-queue's signed
//! POSTs through the AWS SDK for JavaScript v3 to a FIFO queue and its worker's partial
//! batch failures, and what its role refuses. Needs npm (and the npm registry, or its cache)
//! for the first run; later runs reuse target/test-python/build-cache.

use nimbus_tests::*;

#[test]
fn examples_suite() {
    let stdout = python::pytest(&["tests/python/test_examples.py"]);
    println!("{stdout}");
}
