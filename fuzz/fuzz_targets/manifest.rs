//! Arbitrary text as a `nimbus.toml` manifest: parsing and validation must never panic, and a
//! manifest that parses yields a configuration that survives a JSON round trip (what the CLI
//! sends to the server) unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(project) = nimbus_core::manifest::parse_project(text) {
        for f in &project.functions {
            let json = serde_json::to_vec(&f.config).expect("config serializes");
            let back: nimbus_core::FunctionConfig =
                serde_json::from_slice(&json).expect("config deserializes");
            assert_eq!(back, f.config);
        }
        for r in &project.rules {
            assert!(r.api_body().is_object());
        }
    }
    let _ = nimbus_core::manifest::parse(text);
});
