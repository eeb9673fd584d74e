//! Arbitrary bytes as an IAM query-protocol body (`nimbus_gateway`'s IAM decoder):
//! decoding never panics, and what decodes (or fails) renders IAM's XML without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let xml = nimbus_gateway::iam_render_for_fuzzing(data);
    assert!(xml.starts_with('<'));
});
