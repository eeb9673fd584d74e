//! The input/output pipeline, expectations from the AWS developer guide pages cited per case.

use nimbus_flows::definition::{State, StateMachine};
use nimbus_flows::io;
use nimbus_flows::jsonata::Variables;
use rand::SeedableRng;
use serde_json::{json, Value};

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(1)
}

fn single_state(state: Value) -> State {
    let def = json!({ "StartAt": "S", "States": { "S": state } });
    let m = StateMachine::parse(&def.to_string()).unwrap_or_else(|e| panic!("{e}"));
    m.states["S"].clone()
}

/// https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultpath.html
#[test]
fn result_path_cases() {
    let input = json!({ "comment": "This is a test", "details": "Default example", "who": "Step Functions" });
    let result = json!("Hello, Step Functions!");
    let cases: &[(Option<Option<&str>>, Value)] = &[
        (None, result.clone()),
        (Some(Some("$")), result.clone()),
        (Some(None), input.clone()),
        (
            Some(Some("$.taskresult")),
            json!({ "comment": "This is a test", "details": "Default example", "who": "Step Functions", "taskresult": "Hello, Step Functions!" }),
        ),
        // Missing intermediate objects are created.
        (
            Some(Some("$.a.b")),
            json!({ "comment": "This is a test", "details": "Default example", "who": "Step Functions", "a": { "b": "Hello, Step Functions!" } }),
        ),
        // An existing field is replaced.
        (
            Some(Some("$.who")),
            json!({ "comment": "This is a test", "details": "Default example", "who": "Hello, Step Functions!" }),
        ),
    ];
    for (path, want) in cases {
        let path = path.map(|p| p.map(str::to_string));
        assert_eq!(
            &io::apply_result_path(&path, &input, result.clone()).unwrap(),
            want,
            "{path:?}"
        );
    }
    // A ResultPath that cannot be applied: the input is a string, or a field on the way is.
    for (input, path) in [
        (json!("plain"), "$.x"),
        (json!({ "who": "x" }), "$.who.name"),
        (json!({ "a": [1] }), "$.a[3]"),
    ] {
        let err =
            io::apply_result_path(&Some(Some(path.to_string())), &input, json!(1)).unwrap_err();
        assert_eq!(err.error_name(), "States.ResultPathMatchFailure", "{path}");
    }
}

/// https://docs.aws.amazon.com/step-functions/latest/dg/input-output-inputpath-params.html
#[test]
fn input_path_and_parameters() {
    let input = json!({ "comment": "Example for InputPath.", "dataset1": { "val1": 1, "val2": 2, "val3": 3 }, "dataset2": { "val1": "a", "val2": "b", "val3": "c" } });
    assert_eq!(
        io::apply_input_path(&Some(Some("$.dataset2".into())), &input, &Value::Null).unwrap(),
        json!({ "val1": "a", "val2": "b", "val3": "c" })
    );
    assert_eq!(
        io::apply_input_path(&Some(None), &input, &Value::Null).unwrap(),
        json!({})
    );
    let err = io::apply_input_path(&Some(Some("$.nope".into())), &input, &Value::Null).unwrap_err();
    assert_eq!(err.error_name(), "States.Runtime");

    // Parameters with static, path, context and nested values.
    let input = json!({ "flagged": 7, "vals": [0, 10, 20, 30, 40, 50] });
    let template = json!({
        "comment": "Selecting what I care about.",
        "MyDetails": { "size.$": "$.vals[1]", "exists.$": "$.flagged", "static": 5 },
        "execution.$": "$$.Execution.Id",
        "list": [{ "first.$": "$.vals[0]" }],
        "count.$": "States.ArrayLength($.vals)"
    });
    let ctx =
        json!({ "Execution": { "Id": "arn:aws:states:us-east-1:123456789012:execution:m:e" } });
    let out = io::apply_template(&template, &input, &ctx, &Variables::new(), &mut rng()).unwrap();
    assert_eq!(
        out,
        json!({
            "comment": "Selecting what I care about.",
            "MyDetails": { "size": 10, "exists": 7, "static": 5 },
            "execution": "arn:aws:states:us-east-1:123456789012:execution:m:e",
            "list": [{ "first": 0 }],
            "count": 6
        })
    );
    let err = io::apply_template(
        &json!({ "x.$": "$.missing" }),
        &input,
        &ctx,
        &Variables::new(),
        &mut rng(),
    )
    .unwrap_err();
    assert_eq!(err.error_name(), "States.ParameterPathFailure");
}

/// https://docs.aws.amazon.com/step-functions/latest/dg/input-output-inputpath-params.html
/// ("ResultSelector" example) and
/// https://docs.aws.amazon.com/step-functions/latest/dg/input-output-example.html
#[test]
fn full_pipeline_of_a_task() {
    let state = single_state(json!({
        "Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f", "End": true,
        "InputPath": "$.lambda",
        "Parameters": { "val1.$": "$.val1", "static": "x" },
        "ResultSelector": { "ClusterId.$": "$.output.ClusterId", "ResourceType.$": "$.resourceType" },
        "ResultPath": "$.EMROutput",
        "OutputPath": "$.EMROutput"
    }));
    let io_fields = state.io().unwrap();
    let raw = json!({ "comment": "x", "lambda": { "val1": 1 } });
    assert_eq!(
        io::effective_input(io_fields, &raw, &Value::Null, &Variables::new(), &mut rng()).unwrap(),
        json!({ "val1": 1, "static": "x" })
    );
    let task_result = json!({ "resourceType": "elasticmapreduce", "resource": "createCluster.sync", "output": { "SdkHttpMetadata": {}, "ClusterId": "AKIAIOSFODNN7EXAMPLE" } });
    let out = io::state_output(
        io_fields,
        &raw,
        task_result,
        &Value::Null,
        &Variables::new(),
        &mut rng(),
    )
    .unwrap();
    assert_eq!(
        out,
        json!({ "ClusterId": "AKIAIOSFODNN7EXAMPLE", "ResourceType": "elasticmapreduce" })
    );
}

/// https://docs.aws.amazon.com/step-functions/latest/dg/state-pass.html
#[test]
fn pass_state_result_and_result_path() {
    let State::Pass(pass) = single_state(json!({
        "Type": "Pass", "Result": { "x-datum": 0.381018, "y-datum": 622.2269926397355 }, "ResultPath": "$.coords", "End": true
    })) else {
        panic!("not a Pass state")
    };
    let input = json!({ "georefOf": "Home" });
    let out = io::pass_output(&pass, &input, &Value::Null, &Variables::new(), &mut rng()).unwrap();
    assert_eq!(
        out,
        json!({ "georefOf": "Home", "coords": { "x-datum": 0.381018, "y-datum": 622.2269926397355 } })
    );
}

/// https://docs.aws.amazon.com/step-functions/latest/dg/input-output-resultpath.html
/// ("Use ResultPath to include an error with input" in a Catch).
#[test]
fn catch_result_path_keeps_input_and_adds_error() {
    let state = single_state(json!({
        "Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:f", "End": true,
        "Catch": [{ "ErrorEquals": ["States.ALL"], "Next": "S", "ResultPath": "$.error" }]
    }));
    let catcher = &state.catchers()[0];
    let err = nimbus_flows::Error::states("CustomError", "This is a custom error!");
    let out = io::catch_output(catcher, &json!({ "foo": "bar" }), &err).unwrap();
    assert_eq!(
        out,
        json!({ "foo": "bar", "error": { "Error": "CustomError", "Cause": "This is a custom error!" } })
    );
}

/// https://docs.aws.amazon.com/step-functions/latest/dg/input-output-contextobject.html
/// (ItemSelector with `$$.Map.Item.Index` and `$$.Map.Item.Value`).
#[test]
fn map_item_selector_and_items() {
    let State::Map(map) = single_state(json!({
        "Type": "Map", "ItemsPath": "$.detail.shipped", "End": true,
        "ItemSelector": { "ContextIndex.$": "$$.Map.Item.Index", "ContextValue.$": "$$.Map.Item.Value", "parcel.$": "$.detail.id" },
        "ItemProcessor": { "StartAt": "P", "States": { "P": { "Type": "Pass", "End": true } } }
    })) else {
        panic!("not a Map state")
    };
    let input = json!({ "detail": { "id": 7, "shipped": [{ "prod": "R31" }, { "prod": "S39" }] } });
    let items = nimbus_flows::steps::map_items(&map, &input).unwrap();
    assert_eq!(items.len(), 2);
    let it = nimbus_flows::steps::iteration_input(
        &map,
        &input,
        &json!({}),
        1,
        &items[1],
        &Variables::new(),
        &mut rng(),
    )
    .unwrap();
    assert_eq!(
        it,
        json!({ "ContextIndex": 1, "ContextValue": { "prod": "S39" }, "parcel": 7 })
    );
    let err =
        nimbus_flows::steps::map_items(&map, &json!({ "detail": { "shipped": 3 } })).unwrap_err();
    assert_eq!(err.error_name(), "States.Runtime");
}

/// https://docs.aws.amazon.com/step-functions/latest/dg/state-fail.html and state-wait.html
#[test]
fn fail_and_wait_fields() {
    let State::Fail(fail) = single_state(
        json!({ "Type": "Fail", "ErrorPath": "$.code", "CausePath": "States.Format('bad {}', $.why)" }),
    ) else {
        panic!("not a Fail state")
    };
    let e = nimbus_flows::steps::fail_error(
        &fail,
        &json!({ "code": "E1", "why": "input" }),
        &Value::Null,
        &Variables::new(),
        &mut rng(),
    )
    .unwrap();
    assert_eq!(e.error_name(), "E1");
    assert_eq!(e.cause(), "bad input");
    let State::Wait(wait) =
        single_state(json!({ "Type": "Wait", "TimestampPath": "$.expirydate", "End": true }))
    else {
        panic!("not a Wait state")
    };
    let t =
        nimbus_flows::steps::wait_target(&wait, &json!({ "expirydate": "2016-03-14T01:59:00Z" }))
            .unwrap();
    assert!(
        matches!(t, nimbus_flows::steps::WaitTarget::Until(at) if at.unix_timestamp() == 1_457_920_740)
    );
    let State::Wait(wait) =
        single_state(json!({ "Type": "Wait", "SecondsPath": "$.s", "End": true }))
    else {
        panic!()
    };
    assert_eq!(
        nimbus_flows::steps::wait_target(&wait, &json!({ "s": 10 })).unwrap(),
        nimbus_flows::steps::WaitTarget::Seconds(10)
    );
    assert_eq!(
        nimbus_flows::steps::wait_target(&wait, &json!({ "s": "x" }))
            .unwrap_err()
            .error_name(),
        "States.Runtime"
    );
}

/// https://docs.aws.amazon.com/step-functions/latest/dg/state-map-distributed.html
/// (ToleratedFailurePercentage / ToleratedFailureCount).
#[test]
fn tolerated_failures() {
    use nimbus_flows::steps::check_tolerance;
    assert!(check_tolerance(0, 10, None, None).is_ok());
    assert!(check_tolerance(1, 10, None, None).is_err());
    assert!(check_tolerance(2, 10, Some(2), None).is_ok());
    assert!(check_tolerance(3, 10, Some(2), None).is_err());
    assert!(check_tolerance(3, 10, None, Some(30.0)).is_ok());
    let e = check_tolerance(4, 10, None, Some(30.0)).unwrap_err();
    assert_eq!(e.error_name(), "States.ExceedToleratedFailureThreshold");
}
