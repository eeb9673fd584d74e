//! Validation: one case per problem kind, each checking the diagnostic code and location.
//! Rules from https://states-language.net/spec.html and the diagnostic codes of
//! https://docs.aws.amazon.com/step-functions/latest/apireference/API_ValidateStateMachineDefinitionDiagnostic.html

use nimbus_flows::definition::{ProcessorMode, State, StateMachine};
use nimbus_flows::validate::{validate, Severity};
use serde_json::{json, Value};

fn errors(def: &str) -> Vec<String> {
    validate(def)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect()
}

fn machine(states: Value) -> String {
    json!({ "StartAt": "A", "States": states }).to_string()
}

fn expect(def: String, needle: &str) {
    let errs = errors(&def);
    assert!(
        errs.iter().any(|e| e.contains(needle)),
        "want {needle:?} in {errs:#?}\nfor {def}"
    );
}

#[test]
fn valid_machine_with_every_state_type_parses() {
    let def = json!({
        "Comment": "all states", "StartAt": "Task", "TimeoutSeconds": 60, "Version": "1.0",
        "States": {
            "Task": { "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Parameters": { "Payload.$": "$", "FunctionName": "f" },
                "ResultSelector": { "p.$": "$.Payload" }, "ResultPath": "$.r", "TimeoutSeconds": 10, "HeartbeatSeconds": 5,
                "Retry": [{ "ErrorEquals": ["Lambda.ServiceException"], "JitterStrategy": "FULL", "MaxDelaySeconds": 10 }, { "ErrorEquals": ["States.ALL"] }],
                "Catch": [{ "ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "Failed" }], "Next": "Pass" },
            "Pass": { "Type": "Pass", "Result": { "a": 1 }, "ResultPath": "$.pass", "Next": "Choice" },
            "Choice": { "Type": "Choice", "Choices": [{ "Variable": "$.pass.a", "NumericEquals": 1, "Next": "Wait" }], "Default": "Failed" },
            "Wait": { "Type": "Wait", "Seconds": 1, "Next": "Parallel" },
            "Parallel": { "Type": "Parallel", "Branches": [
                { "StartAt": "B1", "States": { "B1": { "Type": "Pass", "End": true } } },
                { "StartAt": "B2", "States": { "B2": { "Type": "Succeed" } } }
            ], "Next": "Map" },
            "Map": { "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2, "ItemSelector": { "v.$": "$$.Map.Item.Value" },
                "ItemProcessor": { "ProcessorConfig": { "Mode": "INLINE" }, "StartAt": "M1", "States": { "M1": { "Type": "Pass", "End": true } } },
                "Next": "Old" },
            "Old": { "Type": "Map", "Iterator": { "StartAt": "I1", "States": { "I1": { "Type": "Pass", "End": true } } }, "Next": "Done" },
            "Done": { "Type": "Succeed" },
            "Failed": { "Type": "Fail", "Error": "E", "Cause": "c" }
        }
    })
    .to_string();
    assert_eq!(errors(&def), Vec::<String>::new());
    let m = StateMachine::parse(&def).unwrap();
    assert_eq!(m.states.len(), 9);
    let State::Map(map) = &m.states["Map"] else {
        panic!()
    };
    assert_eq!(map.mode(), ProcessorMode::Inline);
    assert!(map.processor().is_some());
    let State::Task(t) = &m.states["Task"] else {
        panic!()
    };
    assert_eq!(t.retry[0].interval_seconds, 1);
    assert_eq!(t.io.result_path, Some(Some("$.r".into())));
}

#[test]
fn each_problem_kind_is_reported() {
    let end = json!({ "Type": "Succeed" });
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "INVALID_JSON_DESCRIPTION"),
        ("".into(), "MISSING_DESCRIPTION"),
        (
            json!({ "States": { "A": end } }).to_string(),
            "These fields are required: [StartAt]",
        ),
        (
            json!({ "StartAt": "X", "States": { "A": end } }).to_string(),
            "MISSING_TRANSITION_TARGET: Missing 'StartAt' target: X at /StartAt",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "Next": "Foo" } })),
            "MISSING_TRANSITION_TARGET: Missing 'Next' target: Foo at /States/A/Next",
        ),
        (
            machine(json!({ "A": { "Type": "Bogus" } })),
            "Unknown state type 'Bogus'",
        ),
        (
            machine(json!({ "A": { "Type": "Pass" } })),
            "Missing 'Next' or 'End'",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "Next": "B", "End": true }, "B": end })),
            "Only one of 'Next' or 'End'",
        ),
        (
            machine(json!({ "A": end, "B": end })),
            "State 'B' is not reachable at /States/B",
        ),
        (
            machine(
                json!({ "A": { "Type": "Pass", "Next": "B" }, "B": { "Type": "Pass", "Next": "A" } }),
            ),
            "MISSING_END_STATE",
        ),
        (
            machine(
                json!({ "A": { "Type": "Pass", "Next": "B" }, "B": { "Type": "Pass", "Next": "A" }, "C": end }),
            ),
            "State 'A' is in a cycle with no path to a terminal state",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "End": true, "Foo": 1 } })),
            "Field 'Foo' is not supported at /States/A/Foo",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "End": true, "ResultPath": "$.a[*]" } })),
            "must be a valid reference path",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "End": true, "ResultPath": "$$.Execution" } })),
            "may not reference the context object",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "End": true, "InputPath": "nope" } })),
            "at /States/A/InputPath",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "End": true, "OutputPath": "$.a[" } })),
            "at /States/A/OutputPath",
        ),
        (
            machine(
                json!({ "A": { "Type": "Pass", "End": true, "Parameters": { "x.$": "$.a[" } } }),
            ),
            "at /States/A/Parameters/x.$",
        ),
        (
            machine(
                json!({ "A": { "Type": "Pass", "End": true, "Parameters": { "x.$": "States.Nope()" } } }),
            ),
            "unknown intrinsic function 'States.Nope'",
        ),
        (
            machine(
                json!({ "A": { "Type": "Pass", "End": true, "Parameters": { "x.$": "States.ArrayLength(1, 2)" } } }),
            ),
            "takes 1 argument(s), got 2",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "End": true, "Parameters": { "x.$": 3 } } })),
            "must be a string",
        ),
        (
            machine(json!({ "A": { "Type": "Task", "End": true } })),
            "These fields are required: [Resource]",
        ),
        (
            machine(json!({ "A": { "Type": "Task", "Resource": "", "End": true } })),
            "INVALID_RESOURCE",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "TimeoutSeconds": 5, "HeartbeatSeconds": 5 } }),
            ),
            "smaller than 'TimeoutSeconds'",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "TimeoutSeconds": 5, "TimeoutSecondsPath": "$.t" } }),
            ),
            "Only one of 'TimeoutSeconds' or 'TimeoutSecondsPath'",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "Retry": [{ "ErrorEquals": ["States.ALL", "E"] }] } }),
            ),
            "'States.ALL' must appear alone",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "Retry": [{ "ErrorEquals": ["States.ALL"] }, { "ErrorEquals": ["E"] }] } }),
            ),
            "must be the last one at /States/A/Retry/0/ErrorEquals/0",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "Retry": [{ "ErrorEquals": ["States.Bogus"] }] } }),
            ),
            "Unknown predefined error name",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "Retry": [{ "ErrorEquals": ["E"], "BackoffRate": 0.5 }] } }),
            ),
            "BackoffRate",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "Retry": [{ "ErrorEquals": ["E"], "JitterStrategy": "SOME" }] } }),
            ),
            "JitterStrategy",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "Retry": [{ "ErrorEquals": [] }] } }),
            ),
            "non-empty array",
        ),
        (
            machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "End": true, "Catch": [{ "ErrorEquals": ["E"], "Next": "Z" }] } }),
            ),
            "Missing 'Next' target: Z at /States/A/Catch/0/Next",
        ),
        (
            machine(json!({ "A": { "Type": "Choice", "Choices": [] } })),
            "Field 'Choices' must be a non-empty array",
        ),
        (
            machine(
                json!({ "A": { "Type": "Choice", "Choices": [{ "Variable": "$.a", "Next": "B" }] }, "B": end }),
            ),
            "exactly one comparison operator, found none",
        ),
        (
            machine(
                json!({ "A": { "Type": "Choice", "Choices": [{ "Variable": "$.a", "NumericEquals": "x", "Next": "B" }] }, "B": end }),
            ),
            "'NumericEquals' must be a number",
        ),
        (
            machine(
                json!({ "A": { "Type": "Choice", "Choices": [{ "Not": { "Variable": "$.a", "IsNull": true, "Next": "B" }, "Next": "B" }] }, "B": end }),
            ),
            "A nested Choice rule may not have a 'Next' field",
        ),
        (
            machine(
                json!({ "A": { "Type": "Choice", "Choices": [{ "Variable": "$.a", "IsNull": true, "Next": "B" }], "Default": "Q" }, "B": end }),
            ),
            "Missing 'Default' target: Q",
        ),
        (
            machine(
                json!({ "A": { "Type": "Choice", "Choices": [{ "Variable": "$.a", "IsNull": true, "Next": "B" }], "End": true }, "B": end }),
            ),
            "Field 'End' is not supported",
        ),
        (
            machine(json!({ "A": { "Type": "Wait", "End": true } })),
            "exactly one of 'Seconds'",
        ),
        (
            machine(
                json!({ "A": { "Type": "Wait", "Seconds": 1, "Timestamp": "2016-03-14T01:59:00Z", "End": true } }),
            ),
            "exactly one of 'Seconds'",
        ),
        (
            machine(json!({ "A": { "Type": "Wait", "Timestamp": "tomorrow", "End": true } })),
            "RFC 3339",
        ),
        (
            machine(json!({ "A": { "Type": "Fail", "Error": "E", "ErrorPath": "$.e" } })),
            "Only one of 'Error' or 'ErrorPath'",
        ),
        (
            machine(json!({ "A": { "Type": "Fail", "CausePath": "States.Format(" } })),
            "at /States/A/CausePath",
        ),
        (
            machine(json!({ "A": { "Type": "Parallel", "End": true, "Branches": [] } })),
            "Field 'Branches' must be a non-empty array",
        ),
        (
            machine(
                json!({ "A": { "Type": "Parallel", "End": true, "Branches": [{ "StartAt": "X", "States": { "X": { "Type": "Pass", "Next": "A" } } }] } }),
            ),
            "Missing 'Next' target: A at /States/A/Branches/0/States/X/Next",
        ),
        (
            machine(
                json!({ "A": { "Type": "Parallel", "End": true, "Branches": [{ "StartAt": "A", "States": { "A": { "Type": "Succeed" } } }] } }),
            ),
            "DUPLICATE_STATE_NAME",
        ),
        (
            r#"{"StartAt":"A","States":{"A":{"Type":"Succeed"},"A":{"Type":"Succeed"}}}"#
                .to_string(),
            "DUPLICATE_STATE_NAME: Duplicate State name: A at /States/A",
        ),
        (
            machine(json!({ "A": { "Type": "Map", "End": true } })),
            "These fields are required: [ItemProcessor]",
        ),
        (
            machine(
                json!({ "A": { "Type": "Map", "End": true, "ItemReader": {}, "ItemProcessor": { "StartAt": "X", "States": { "X": { "Type": "Succeed" } } } } }),
            ),
            "only supported in DISTRIBUTED mode",
        ),
        (
            machine(
                json!({ "A": { "Type": "Map", "End": true, "ToleratedFailurePercentage": 150, "ItemProcessor": { "ProcessorConfig": { "Mode": "DISTRIBUTED" }, "StartAt": "X", "States": { "X": { "Type": "Succeed" } } } } }),
            ),
            "from 0 to 100",
        ),
        (
            machine(
                json!({ "A": { "Type": "Map", "End": true, "ItemProcessor": { "ProcessorConfig": { "Mode": "SIDEWAYS" }, "StartAt": "X", "States": { "X": { "Type": "Succeed" } } } } }),
            ),
            "Invalid value for field 'Mode'",
        ),
        (
            machine(
                json!({ "A": { "Type": "Map", "End": true, "ItemsPath": "$.a[*]", "Iterator": { "StartAt": "X", "States": { "X": { "Type": "Succeed" } } } } }),
            ),
            "at /States/A/ItemsPath",
        ),
        (
            machine(json!({ (("N".repeat(81))): end })),
            "INVALID_STATE_NAME",
        ),
        (
            machine(
                json!({ "A": { "Type": "Pass", "End": true, "QueryLanguage": "JSONata", "InputPath": "$" } }),
            ),
            "The QueryLanguage is set to 'JSONata', but field 'InputPath' is only supported for the 'JSONPath' QueryLanguage at /States/A",
        ),
        (
            machine(json!({ "A": { "Type": "Pass", "End": true, "Output": {} } })),
            "field 'Output' is only supported for the 'JSONata' QueryLanguage at /States/A",
        ),
        (
            format!(
                r#"{{"StartAt":"A","Comment":"{}","States":{{"A":{{"Type":"Succeed"}}}}}}"#,
                "x".repeat(1024 * 1024)
            ),
            "at most 1048576",
        ),
    ];
    for (def, needle) in cases {
        expect(def, needle);
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let def = machine(json!({
        "A": { "Type": "Pass", "Next": "Nowhere", "ResultPath": "$.x[*]" },
        "B": { "Type": "Bogus" },
        "C": { "Type": "Wait", "End": true }
    }));
    let errs = errors(&def);
    assert!(errs.len() >= 4, "{errs:#?}");
    let e = StateMachine::parse(&def).unwrap_err();
    assert!(matches!(e, nimbus_flows::Error::InvalidDefinition(ref d) if d.len() == errs.len()));
}

#[test]
fn warnings_do_not_refuse() {
    let def =
        machine(json!({ "A": { "Type": "Pass", "End": true, "Parameters": { "x": "$.a" } } }));
    let diags = validate(&def);
    assert!(
        diags
            .iter()
            .any(|d| d.code == "NO_DOLLAR" && d.severity == Severity::Warning),
        "{diags:?}"
    );
    assert!(StateMachine::parse(&def).is_ok());
}

#[test]
fn task_resources_must_name_a_function_or_a_known_integration() {
    let task = |r: &str| machine(json!({"A": {"Type": "Task", "Resource": r, "End": true}}));
    for ok in [
        "double",
        "double:live",
        "arn:aws:lambda:us-east-1:000000000000:function:double",
        "arn:aws:lambda:us-east-1:000000000000:function:double:2",
        "arn:aws:states:::lambda:invoke",
        "arn:aws:states:::lambda:invoke.waitForTaskToken",
        "arn:aws:states:::states:startExecution.sync:2",
        "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "arn:aws:states:::events:putEvents",
        "arn:aws:states:::aws-sdk:s3:getObject",
    ] {
        assert!(
            errors(&task(ok)).is_empty(),
            "{ok}: {:?}",
            errors(&task(ok))
        );
    }
    for bad in [
        "arn:aws:states:::dynamodb:putItem",
        "arn:aws:states:::lambda:invoke.sync",
        "arn:aws:states:::s3:getObject.waitForTaskToken",
        "arn:aws:sqs:us-east-1:000000000000:q",
        "arn:aws:states:us-east-1:000000000000:activity:a",
        "not/a/function",
    ] {
        expect(
            task(bad),
            &format!("The resource provided {bad} is not recognized"),
        );
        expect(task(bad), "at /States/A/Resource");
    }
}
