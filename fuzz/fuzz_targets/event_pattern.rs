//! Arbitrary bytes as an EventBridge event pattern: parsing must never panic, and a pattern
//! that parses must match without panicking, both against a fixed event and against its own
//! JSON, and must survive a round trip through its display form.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nimbus_events::pattern::{EventPattern, PatternError};
use serde_json::{json, Value};

fn event() -> &'static Value {
    static EVENT: OnceLock<Value> = OnceLock::new();
    EVENT.get_or_init(|| {
        json!({
            "version": "0",
            "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": "012345679012",
            "time": "2017-10-02T16:24:49Z",
            "region": "us-east-1",
            "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
            "detail": {
                "c-count": 5,
                "x-limit": 301.8,
                "source-ip": "10.0.0.33",
                "source-ipv6": "2001:db8::1",
                "state": "running",
                "file": "photos/IMG_0001.PNG",
                "tags": ["prod", "web"],
                "owner": null,
                "enabled": true,
                "items": [{ "name": "a", "qty": 1 }, { "name": "b", "qty": [2, [3]] }],
                "none": []
            }
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pattern) = EventPattern::parse(text) else {
        return;
    };
    let matched = pattern.matches(event());
    // Numbers may print longer than they were written, so only the size limit may refuse
    // the display form.
    match EventPattern::parse(&pattern.to_string()) {
        Ok(again) => assert_eq!(again.matches(event()), matched),
        Err(PatternError::TooLarge { .. }) => {}
        Err(e) => panic!("display form of a valid pattern does not parse: {e}"),
    }
    if let Ok(itself) = serde_json::from_str::<Value>(text) {
        pattern.matches(&itself);
    }
});
