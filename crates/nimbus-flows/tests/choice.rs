//! Choice rules, one case per operator; semantics from
//! https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html
//! (comparison operators, type mismatch is false, IsPresent, StringMatches escapes).

use nimbus_flows::choice::{choose, string_matches, Condition};
use nimbus_flows::definition::{State, StateMachine};
use serde_json::{json, Value};

fn holds(rule: Value, input: &Value) -> Result<bool, nimbus_flows::Error> {
    Condition::from_json(&rule)
        .unwrap_or_else(|e| panic!("{rule}: {e}"))
        .eval(input, &json!({ "Execution": { "Name": "e1" } }))
}

#[test]
fn every_operator() {
    let input = json!({
        "s": "b", "s2": "c", "n": 10, "n2": 10.0, "f": 1.5, "t": true, "z": null,
        "ts": "2016-08-18T17:33:00Z", "ts2": "2016-08-19T00:00:00+02:00", "file": "log-2024.txt", "star": "a*b"
    });
    let cases: &[(Value, bool)] = &[
        (json!({ "Variable": "$.s", "StringEquals": "b" }), true),
        (
            json!({ "Variable": "$.s", "StringEqualsPath": "$.s2" }),
            false,
        ),
        (json!({ "Variable": "$.s", "StringLessThan": "c" }), true),
        (
            json!({ "Variable": "$.s", "StringLessThanPath": "$.s2" }),
            true,
        ),
        (json!({ "Variable": "$.s", "StringGreaterThan": "a" }), true),
        (
            json!({ "Variable": "$.s", "StringGreaterThanPath": "$.s2" }),
            false,
        ),
        (
            json!({ "Variable": "$.s", "StringLessThanEquals": "b" }),
            true,
        ),
        (
            json!({ "Variable": "$.s", "StringLessThanEqualsPath": "$.s" }),
            true,
        ),
        (
            json!({ "Variable": "$.s", "StringGreaterThanEquals": "c" }),
            false,
        ),
        (
            json!({ "Variable": "$.s2", "StringGreaterThanEqualsPath": "$.s" }),
            true,
        ),
        (
            json!({ "Variable": "$.file", "StringMatches": "log-*.txt" }),
            true,
        ),
        (
            json!({ "Variable": "$.star", "StringMatches": "a\\*b" }),
            true,
        ),
        (
            json!({ "Variable": "$.file", "StringMatches": "a\\*b" }),
            false,
        ),
        (json!({ "Variable": "$.n", "NumericEquals": 10 }), true),
        (
            json!({ "Variable": "$.n", "NumericEqualsPath": "$.n2" }),
            true,
        ),
        (json!({ "Variable": "$.f", "NumericLessThan": 2 }), true),
        (
            json!({ "Variable": "$.f", "NumericLessThanPath": "$.n" }),
            true,
        ),
        (
            json!({ "Variable": "$.n", "NumericGreaterThan": 10 }),
            false,
        ),
        (
            json!({ "Variable": "$.n", "NumericGreaterThanPath": "$.f" }),
            true,
        ),
        (
            json!({ "Variable": "$.n", "NumericLessThanEquals": 10 }),
            true,
        ),
        (
            json!({ "Variable": "$.n", "NumericLessThanEqualsPath": "$.f" }),
            false,
        ),
        (
            json!({ "Variable": "$.n", "NumericGreaterThanEquals": 10.5 }),
            false,
        ),
        (
            json!({ "Variable": "$.n", "NumericGreaterThanEqualsPath": "$.n2" }),
            true,
        ),
        (json!({ "Variable": "$.t", "BooleanEquals": true }), true),
        (
            json!({ "Variable": "$.t", "BooleanEqualsPath": "$.t" }),
            true,
        ),
        (
            json!({ "Variable": "$.ts", "TimestampEquals": "2016-08-18T17:33:00Z" }),
            true,
        ),
        (
            json!({ "Variable": "$.ts", "TimestampEqualsPath": "$.ts2" }),
            false,
        ),
        (
            json!({ "Variable": "$.ts", "TimestampLessThan": "2016-08-19T00:00:00Z" }),
            true,
        ),
        (
            json!({ "Variable": "$.ts", "TimestampLessThanPath": "$.ts2" }),
            true,
        ),
        (
            json!({ "Variable": "$.ts", "TimestampGreaterThan": "2016-08-18T17:33:00Z" }),
            false,
        ),
        (
            json!({ "Variable": "$.ts2", "TimestampGreaterThanPath": "$.ts" }),
            true,
        ),
        (
            json!({ "Variable": "$.ts", "TimestampLessThanEquals": "2016-08-18T17:33:00Z" }),
            true,
        ),
        (
            json!({ "Variable": "$.ts", "TimestampLessThanEqualsPath": "$.ts" }),
            true,
        ),
        (
            json!({ "Variable": "$.ts", "TimestampGreaterThanEquals": "2016-08-18T17:33:01Z" }),
            false,
        ),
        (
            json!({ "Variable": "$.ts2", "TimestampGreaterThanEqualsPath": "$.ts" }),
            true,
        ),
        (json!({ "Variable": "$.z", "IsNull": true }), true),
        (json!({ "Variable": "$.s", "IsNull": false }), true),
        (json!({ "Variable": "$.s", "IsPresent": true }), true),
        (json!({ "Variable": "$.missing", "IsPresent": false }), true),
        (json!({ "Variable": "$.missing", "IsPresent": true }), false),
        (json!({ "Variable": "$.f", "IsNumeric": true }), true),
        (json!({ "Variable": "$.s", "IsString": true }), true),
        (json!({ "Variable": "$.t", "IsBoolean": true }), true),
        (json!({ "Variable": "$.ts", "IsTimestamp": true }), true),
        (json!({ "Variable": "$.s", "IsTimestamp": true }), false),
        // Context object variables.
        (
            json!({ "Variable": "$$.Execution.Name", "StringEquals": "e1" }),
            true,
        ),
        // Type mismatch is false, not an error.
        (json!({ "Variable": "$.s", "NumericEquals": 1 }), false),
        (json!({ "Variable": "$.n", "StringEquals": "10" }), false),
        (
            json!({ "Variable": "$.s", "TimestampEquals": "2016-08-18T17:33:00Z" }),
            false,
        ),
        (json!({ "Variable": "$.n", "BooleanEquals": true }), false),
        // And / Or / Not, nested.
        (
            json!({ "And": [{ "Variable": "$.n", "NumericGreaterThanEquals": 5 }, { "Variable": "$.n", "NumericLessThan": 20 }] }),
            true,
        ),
        (
            json!({ "Or": [{ "Variable": "$.s", "StringEquals": "x" }, { "Not": { "Variable": "$.t", "BooleanEquals": false } }] }),
            true,
        ),
        (
            json!({ "Not": { "Variable": "$.s", "StringEquals": "b" } }),
            false,
        ),
    ];
    for (rule, want) in cases {
        assert_eq!(
            holds(rule.clone(), &input).unwrap_or_else(|e| panic!("{rule}: {e}")),
            *want,
            "{rule}"
        );
    }
}

#[test]
fn missing_variable_is_a_runtime_error() {
    let err = holds(
        json!({ "Variable": "$.missing", "StringEquals": "x" }),
        &json!({}),
    )
    .unwrap_err();
    assert_eq!(err.error_name(), "States.Runtime");
    let err = holds(
        json!({ "Variable": "$.a", "StringEqualsPath": "$.missing" }),
        &json!({ "a": "x" }),
    )
    .unwrap_err();
    assert_eq!(err.error_name(), "States.Runtime");
}

#[test]
fn bad_rules_are_refused() {
    for rule in [
        json!({ "Variable": "$.a" }),
        json!({ "Variable": "$.a", "StringEquals": "x", "NumericEquals": 1 }),
        json!({ "Variable": "$.a", "NumericEquals": "1" }),
        json!({ "Variable": "$.a", "TimestampEquals": "yesterday" }),
        json!({ "Variable": "$.a", "IsNull": "yes" }),
        json!({ "Variable": "$.a", "StringMatchesPath": "$.b" }),
        json!({ "Variable": "$.a[*]", "StringEquals": "x" }),
        json!({ "Variable": "$.a", "StringEqualz": "x" }),
        json!({ "And": [] }),
        json!({ "StringEquals": "x" }),
    ] {
        assert!(Condition::from_json(&rule).is_err(), "{rule}");
    }
}

#[test]
fn string_matches_wildcards() {
    // https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html (StringMatches)
    for (text, pattern, want) in [
        ("log-2024.txt", "log-*.txt", true),
        ("log-.txt", "log-*.txt", true),
        ("log-1.csv", "log-*.txt", false),
        ("anything", "*", true),
        ("a*b", "a\\*b", true),
        ("axb", "a\\*b", false),
        ("a\\b", "a\\\\b", true),
        ("abcabc", "*bc*bc", true),
    ] {
        assert_eq!(string_matches(text, pattern), want, "{text} ~ {pattern}");
    }
}

#[test]
fn choice_state_picks_first_match_then_default() {
    // https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html (example)
    let def = json!({
        "StartAt": "ChoiceStateX",
        "States": {
            "ChoiceStateX": {
                "Type": "Choice",
                "Choices": [
                    { "Not": { "Variable": "$.type", "StringEquals": "Private" }, "Next": "Public" },
                    { "Variable": "$.value", "NumericEquals": 0, "Next": "ValueIsZero" },
                    { "And": [{ "Variable": "$.value", "NumericGreaterThanEquals": 20 }, { "Variable": "$.value", "NumericLessThan": 30 }], "Next": "ValueInTwenties" }
                ],
                "Default": "DefaultState"
            },
            "Public": { "Type": "Succeed" }, "ValueIsZero": { "Type": "Succeed" },
            "ValueInTwenties": { "Type": "Succeed" }, "DefaultState": { "Type": "Fail", "Cause": "No Matches!" }
        }
    });
    let m = StateMachine::parse(&def.to_string()).unwrap();
    let State::Choice(c) = &m.states["ChoiceStateX"] else {
        panic!()
    };
    for (input, want) in [
        (json!({ "type": "Public", "value": 5 }), "Public"),
        (json!({ "type": "Private", "value": 0 }), "ValueIsZero"),
        (json!({ "type": "Private", "value": 25 }), "ValueInTwenties"),
        (json!({ "type": "Private", "value": 99 }), "DefaultState"),
    ] {
        assert_eq!(choose(c, &input, &Value::Null).unwrap(), want, "{input}");
    }
    let mut no_default = c.clone();
    no_default.default = None;
    let err = choose(
        &no_default,
        &json!({ "type": "Private", "value": 99 }),
        &Value::Null,
    )
    .unwrap_err();
    assert_eq!(err.error_name(), "States.NoChoiceMatched");
}
