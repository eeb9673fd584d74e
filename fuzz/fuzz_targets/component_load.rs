//! Arbitrary bytes as a deployed WebAssembly component (`nimbus_wasm::validate_component`,
//! the compile step of the wasm executor's loading path): untrusted bytes are refused with an
//! error saying they are not a component, never a panic or a crash of the process.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match nimbus_wasm::validate_component(data) {
        Ok(()) => {}
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("not a valid WebAssembly component"),
                "unclear error: {msg}"
            );
        }
    }
});
