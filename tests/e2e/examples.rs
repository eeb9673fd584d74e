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
