//! The JSONata query language: templates, `$states`, Output/Assign and variables, Choice
//! conditions, the functions Step Functions adds, errors and validation. Expectations from
//! the AWS developer guide pages cited per case:
//! - T: https://docs.aws.amazon.com/step-functions/latest/dg/transforming-data.html
//! - V: https://docs.aws.amazon.com/step-functions/latest/dg/workflow-variables.html
//! - C: https://docs.aws.amazon.com/step-functions/latest/dg/state-choice.html
//! - S: https://docs.aws.amazon.com/step-functions/latest/dg/statemachine-structure.html

use nimbus_flows::definition::{State, StateMachine};
use nimbus_flows::jsonata::{self, Env, Variables};
use nimbus_flows::steps::WaitTarget;
use nimbus_flows::validate::{validate, Severity};
use nimbus_flows::Error;
use rand::SeedableRng;
use serde_json::{json, Value};

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(7)
}

/// The state `S` of a JSONata machine (its targets are added as Succeed states).
fn state(s: Value) -> State {
    let mut states = serde_json::Map::new();
    let mut targets: Vec<&Value> = vec![&s["Next"], &s["Default"]];
    for list in ["Choices", "Catch"] {
        if let Some(items) = s[list].as_array() {
            targets.extend(items.iter().map(|i| &i["Next"]));
        }
    }
    for t in targets.into_iter().filter_map(Value::as_str) {
        states.insert(t.to_string(), json!({ "Type": "Succeed" }));
    }
    states.insert("S".to_string(), s.clone());
    let def = json!({ "QueryLanguage": "JSONata", "StartAt": "S", "States": states });
    let m = StateMachine::parse(&def.to_string()).unwrap_or_else(|e| panic!("{e}"));
    m.states["S"].clone()
}

fn vars(v: Value) -> Variables {
    let mut vars = Variables::new();
    vars.assign(v.as_object().unwrap().clone());
    vars
}

fn ctx() -> Value {
    json!({ "Execution": { "Id": "arn:aws:states:us-east-1:1:execution:m:e1", "Input": { "orig": true } }, "State": { "Name": "S" } })
}

/// Evaluates one template against `input` with `vars`.
fn eval(template: Value, input: Value, vars: &Variables) -> nimbus_flows::Result<Value> {
    let context = ctx();
    let mut r = rng();
    let mut env = Env {
        context: &context,
        vars,
        rng: &mut r,
    };
    jsonata::evaluate(&template, "Arguments", &input, &mut env)
}

fn query_error(e: &Error, needle: &str) {
    assert_eq!(e.error_name(), "States.QueryEvaluationError", "{e}");
    assert!(
        e.cause().contains(needle),
        "want {needle:?} in {}",
        e.cause()
    );
}

/// T: the JSONPath → JSONata conversion example: static values stay, `{% %}` strings are
/// evaluated, a plain "$customerName" is not.
#[test]
fn arguments_template_from_the_guide() {
    let s = state(
        json!({ "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": true,
        "Arguments": { "static": "Hello", "title": "{% $states.input.title %}", "name": "{% $customerName %}", "not-evaluated": "$customerName" } }),
    );
    let State::Task(t) = s else { panic!() };
    let context = ctx();
    let vars = vars(json!({ "customerName": "María" }));
    let mut r = rng();
    let mut env = Env {
        context: &context,
        vars: &vars,
        rng: &mut r,
    };
    let args = jsonata::arguments(&t.io, &json!({ "title": "Doctor" }), &mut env).unwrap();
    assert_eq!(
        args,
        json!({ "static": "Hello", "title": "Doctor", "name": "María", "not-evaluated": "$customerName" })
    );
}

/// T: a whole-string expression (trimmed), nested objects and arrays, other values as is;
/// `$states.context` and `$states.input`.
#[test]
fn templates_walk_objects_and_arrays() {
    let v = Variables::new();
    let cases: Vec<(Value, Value, Value)> = vec![
        (json!("{% 1 + 2 %}"), json!({}), json!(3)),
        (
            json!("  {%$states.input.a%}  "),
            json!({ "a": "x" }),
            json!("x"),
        ),
        (
            json!("not {% an expression %}"),
            json!({}),
            json!("not {% an expression %}"),
        ),
        (
            json!({ "a": [1, "{% $states.input.n * 2 %}", { "b": "{% $uppercase('x') %}" }], "c": null, "d": true }),
            json!({ "n": 21 }),
            json!({ "a": [1, 42, { "b": "X" }], "c": null, "d": true }),
        ),
        (
            json!("{% $states.context.Execution.Input.orig %}"),
            json!({}),
            json!(true),
        ),
        (
            json!("{% $states.input.items[price > 10].name %}"),
            json!({ "items": [{ "name": "a", "price": 5 }, { "name": "b", "price": 15 }] }),
            json!("b"),
        ),
        (
            json!("{% $sum($states.input.items.(qty * price)) %}"),
            json!({ "items": [{ "qty": 2, "price": 5 }, { "qty": 1, "price": 3 }] }),
            json!(13),
        ),
        (
            json!("{% $states.input.n > 3 ? 'big' : 'small' %}"),
            json!({ "n": 5 }),
            json!("big"),
        ),
    ];
    for (t, input, want) in cases {
        assert_eq!(eval(t.clone(), input, &v).unwrap(), want, "{t}");
    }
}

/// T ("JSONata functions provided by Step Functions").
#[test]
fn functions_added_by_step_functions() {
    let v = Variables::new();
    let cases: Vec<(&str, Value)> = vec![
        ("$partition([1,2,3,4], 2)", json!([[1, 2], [3, 4]])),
        ("$partition([1,2,3,4,5], 2)", json!([[1, 2], [3, 4], [5]])),
        ("$range(0, 10, 2)", json!([0, 2, 4, 6, 8, 10])),
        ("$range(5, 1, -2)", json!([5, 3, 1])),
        // Arguments are truncated towards zero; a single value comes back bare.
        ("$range(-1.7, 2, 1)", json!([-1, 0, 1, 2])),
        ("$range(5, 5, 1)", json!(5)),
        ("$partition([1,2,3,4,5], 2.9)", json!([[1, 2], [3, 4], [5]])),
        (
            "$hash('input data', 'SHA-1')",
            json!("aaff4a450a104cd177d28d18d74485e8cae074b7"),
        ),
        (
            "$hash('input data', 'MD5')",
            json!("812f45842bc6d66ee14572ce20db8e86"),
        ),
        (
            "$parse('{\"key\": [1, \"v\"]}')",
            json!({ "key": [1, "v"] }),
        ),
        ("$random(42) = $random(42)", json!(true)),
        ("$random() >= 0 and $random() < 1", json!(true)),
        ("$length($uuid())", json!(36)),
        ("$substring($uuid(), 14, 1)", json!("4")),
    ];
    for (expr, want) in cases {
        assert_eq!(
            eval(json!(format!("{{% {expr} %}}")), json!({}), &v).unwrap(),
            want,
            "{expr}"
        );
    }
    // Failures are States.QueryEvaluationError naming the function.
    for (expr, needle) in [
        ("$hash('x', 'SHA-3')", "SHA-3"),
        ("$parse('{nope')", "$parse"),
        ("$range(0, 1000000, 1)", "$range"),
        ("$eval('1 + 1')", "T1006"),
        // These return undefined, which the field then refuses.
        ("$partition([1,2], 0)", "returned nothing"),
        ("$partition([], 2)", "returned nothing"),
        ("$range(0, 10)", "returned nothing"),
        ("$range(0, 10, -1)", "returned nothing"),
        ("$hash('x')", "returned nothing"),
    ] {
        let e = eval(json!(format!("{{% {expr} %}}")), json!({}), &v).unwrap_err();
        query_error(&e, needle);
    }
}

/// Errors name the expression and the field; undefined where a value is needed fails.
#[test]
fn evaluation_errors() {
    let v = Variables::new();
    let e = eval(
        json!({ "x": { "y": "{% $states.input.missing %}" } }),
        json!({}),
        &v,
    )
    .unwrap_err();
    query_error(&e, "'$states.input.missing' specified for the field 'Arguments/x/y' returned nothing (undefined)");
    let e = eval(json!("{% $undefinedVariable %}"), json!({}), &v).unwrap_err();
    query_error(&e, "returned nothing");
    let e = eval(json!("{% 'a' + 1 %}"), json!({}), &v).unwrap_err();
    query_error(
        &e,
        "An error occurred while evaluating the JSONata expression ''a' + 1'",
    );
    let e = eval(json!("{% $states.input. %}"), json!({}), &v).unwrap_err();
    query_error(&e, "is invalid");
}

/// V + T: default outputs (the result for Task, the input for Pass), Output and Assign see
/// the same `$states` and the previous variables; new values show from the next state.
#[test]
fn output_and_assign() {
    let context = ctx();
    let mut r = rng();
    let mut vars = vars(json!({ "x": 1 }));
    let input = json!({ "order": { "id": "o-1", "total": 30 } });
    let result = json!({ "Payload": { "status": "OK" } });

    let State::Task(t) =
        state(json!({ "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": true }))
    else {
        panic!()
    };
    let mut env = Env {
        context: &context,
        vars: &vars,
        rng: &mut r,
    };
    let o = jsonata::state_outcome(&t.io, &input, Some(&result), &mut env).unwrap();
    assert_eq!(o.output, result);
    assert!(o.assigned.is_empty());

    let State::Pass(p) = state(json!({ "Type": "Pass", "End": true })) else {
        panic!()
    };
    let mut env = Env {
        context: &context,
        vars: &vars,
        rng: &mut r,
    };
    assert_eq!(
        jsonata::pass_outcome(&p, &input, &mut env).unwrap().output,
        input
    );

    let State::Task(t) = state(
        json!({ "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": true,
        "Output": { "status": "{% $states.result.Payload.status %}", "x": "{% $x %}" },
        "Assign": { "x": "{% $x + 1 %}", "orderId": "{% $states.input.order.id %}", "status": "{% $states.result.Payload.status %}", "fixed": [1, "{% 'two' %}"] } }),
    ) else {
        panic!()
    };
    let mut env = Env {
        context: &context,
        vars: &vars,
        rng: &mut r,
    };
    let o = jsonata::state_outcome(&t.io, &input, Some(&result), &mut env).unwrap();
    // Output sees x as it was before this state's Assign.
    assert_eq!(o.output, json!({ "status": "OK", "x": 1 }));
    let out = o.apply(&mut vars);
    assert_eq!(out, json!({ "status": "OK", "x": 1 }));
    assert_eq!(vars.get("x"), Some(&json!(2)));
    assert_eq!(vars.get("orderId"), Some(&json!("o-1")));
    assert_eq!(vars.get("status"), Some(&json!("OK")));
    assert_eq!(vars.get("fixed"), Some(&json!([1, "two"])));

    // A later state reads the new values.
    assert_eq!(
        eval(
            json!("{% $orderId & ':' & $string($x) %}"),
            json!({}),
            &vars
        )
        .unwrap(),
        json!("o-1:2")
    );
}

/// V: a Parallel branch or Map iteration reads outer variables; what it assigns stays in
/// its scope.
#[test]
fn variable_scopes() {
    let mut outer = vars(json!({ "a": 1 }));
    let mut inner = outer.child();
    assert_eq!(inner.get("a"), Some(&json!(1)));
    inner.assign(json!({ "b": 2 }).as_object().unwrap().clone());
    assert_eq!(
        eval(json!("{% $a + $b %}"), json!({}), &inner).unwrap(),
        json!(3)
    );
    assert_eq!(outer.get("b"), None);
    let e = eval(json!("{% $b %}"), json!({}), &outer).unwrap_err();
    query_error(&e, "returned nothing");
    outer.assign(json!({ "a": 5 }).as_object().unwrap().clone());
    assert_eq!(
        inner.get("a"),
        Some(&json!(1)),
        "a child scope is a snapshot"
    );
    // Variables survive serialization (the executor persists them).
    let text = serde_json::to_string(&inner).unwrap();
    assert_eq!(serde_json::from_str::<Variables>(&text).unwrap(), inner);
}

/// C: the first rule whose Condition holds, its Output/Assign; the Default otherwise;
/// a non-boolean condition fails.
#[test]
fn choice_conditions() {
    let State::Choice(c) = state(json!({ "Type": "Choice", "Default": "D",
        "Output": { "route": "default" },
        "Choices": [
            { "Condition": "{% $states.input.type != 'Private' %}", "Next": "Public", "Assign": { "kind": "public" } },
            { "Condition": "{% $states.input.value >= 20 and $states.input.value < 30 %}", "Next": "ValueInTwenties",
              "Output": { "v": "{% $states.input.value %}" } },
            { "Condition": "{% $states.input.value %}", "Next": "Bad" }
        ] }))
    else {
        panic!()
    };
    let context = ctx();
    let vars = Variables::new();
    let mut r = rng();
    let mut env = Env {
        context: &context,
        vars: &vars,
        rng: &mut r,
    };
    let o = jsonata::choose(&c, &json!({ "type": "Public", "value": 1 }), &mut env).unwrap();
    assert_eq!(o.next, "Public");
    assert_eq!(o.outcome.assigned["kind"], json!("public"));
    // The state's Output applies when the rule has none.
    assert_eq!(o.outcome.output, json!({ "route": "default" }));
    let o = jsonata::choose(&c, &json!({ "type": "Private", "value": 25 }), &mut env).unwrap();
    assert_eq!(
        (o.next.as_str(), o.outcome.output),
        ("ValueInTwenties", json!({ "v": 25 }))
    );
    let e = jsonata::choose(&c, &json!({ "type": "Private", "value": 5 }), &mut env).unwrap_err();
    query_error(
        &e,
        "for the field 'Choices[2]/Condition' must return a boolean",
    );

    let State::Choice(c) = state(json!({ "Type": "Choice", "Choices": [
        { "Condition": "{% $states.input.ok %}", "Next": "X" }] }))
    else {
        panic!()
    };
    let mut env = Env {
        context: &context,
        vars: &vars,
        rng: &mut r,
    };
    let e = jsonata::choose(&c, &json!({ "ok": false }), &mut env).unwrap_err();
    assert_eq!(e.error_name(), "States.NoChoiceMatched");
}

/// T: Wait, Fail, Map and Catch fields as JSONata.
#[test]
fn wait_fail_map_and_catch() {
    let context = ctx();
    let vars = vars(json!({ "delay": 3 }));
    let mut r = rng();
    let State::Wait(w) =
        state(json!({ "Type": "Wait", "Seconds": "{% $delay * 2 %}", "End": true }))
    else {
        panic!()
    };
    let mut env = Env {
        context: &context,
        vars: &vars,
        rng: &mut r,
    };
    assert_eq!(
        jsonata::wait_target(&w, &json!({}), &mut env).unwrap(),
        WaitTarget::Seconds(6)
    );
    let State::Wait(w) =
        state(json!({ "Type": "Wait", "Timestamp": "{% $states.input.at %}", "End": true }))
    else {
        panic!()
    };
    let t = jsonata::wait_target(&w, &json!({ "at": "2026-03-14T01:59:00Z" }), &mut env).unwrap();
    assert!(matches!(t, WaitTarget::Until(_)));
    let e = jsonata::wait_target(&w, &json!({ "at": "soon" }), &mut env).unwrap_err();
    query_error(&e, "RFC 3339");

    let State::Fail(f) = state(
        json!({ "Type": "Fail", "Error": "{% 'Order.' & $states.input.code %}", "Cause": "{% $string($states.input.n) %}" }),
    ) else {
        panic!()
    };
    let e = jsonata::fail_error(&f, &json!({ "code": "Rejected", "n": 4 }), &mut env).unwrap();
    assert_eq!(
        (e.error_name(), e.cause()),
        ("Order.Rejected", "4".to_string())
    );

    let State::Map(m) = state(json!({ "Type": "Map", "End": true,
        "Items": "{% $states.input.orders %}",
        "ItemSelector": { "index": "{% $states.context.Map.Item.Index %}", "id": "{% $states.context.Map.Item.Value.id %}", "customer": "{% $states.input.customer %}" },
        "MaxConcurrency": "{% $delay - 1 %}",
        "ItemProcessor": { "StartAt": "P", "States": { "P": { "Type": "Pass", "End": true } } } }))
    else {
        panic!()
    };
    let input = json!({ "customer": "c-9", "orders": [{ "id": "a" }, { "id": "b" }] });
    let items = jsonata::map_items(&m, &input, &mut env).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        jsonata::iteration_input(&m, &input, 1, &items[1], &mut env).unwrap(),
        json!({ "index": 1, "id": "b", "customer": "c-9" })
    );
    assert_eq!(
        jsonata::resolve_u64(
            "MaxConcurrency",
            m.max_concurrency.as_ref().unwrap(),
            &input,
            &mut env
        )
        .unwrap(),
        2
    );
    let e = jsonata::map_items(&m, &json!({ "orders": "x" }), &mut env).unwrap_err();
    query_error(&e, "must be a JSON array");

    let State::Task(t) = state(
        json!({ "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "End": true,
        "Catch": [
            { "ErrorEquals": ["States.ALL"], "Next": "H", "Output": { "input": "{% $states.input %}", "err": "{% $states.errorOutput.Error %}" }, "Assign": { "lastCause": "{% $states.errorOutput.Cause %}" } },
        ] }),
    ) else {
        panic!()
    };
    let err = Error::states("Lambda.Unknown", "boom");
    let o = jsonata::catch_outcome(&t.catch[0], 0, &json!({ "a": 1 }), &err, &mut env).unwrap();
    assert_eq!(
        o.output,
        json!({ "input": { "a": 1 }, "err": "Lambda.Unknown" })
    );
    assert_eq!(o.assigned["lastCause"], json!("boom"));
}

/// T: the guide's JSONPath original of the conversion example reads the variable
/// `customerName` with `"name.$": "$customerName"`.
#[test]
fn jsonpath_parameters_read_variables() {
    let vars = vars(json!({ "customerName": "María", "order": { "items": [{ "id": "i1" }] } }));
    let template = json!({ "static": "Hello", "title.$": "$.title", "name.$": "$customerName",
        "not-evaluated": "$customerName", "first.$": "$order.items[0].id" });
    let got = nimbus_flows::io::apply_template(
        &template,
        &json!({ "title": "Doctor" }),
        &ctx(),
        &vars,
        &mut rng(),
    )
    .unwrap();
    assert_eq!(
        got,
        json!({ "static": "Hello", "title": "Doctor", "name": "María", "not-evaluated": "$customerName", "first": "i1" })
    );
    let e = nimbus_flows::io::apply_template(
        &json!({ "x.$": "$nobody" }),
        &json!({}),
        &ctx(),
        &vars,
        &mut rng(),
    )
    .unwrap_err();
    assert_eq!(e.error_name(), "States.ParameterPathFailure");
    let def = json!({ "StartAt": "A", "States": { "A": { "Type": "Pass", "Parameters": { "name.$": "$customerName" }, "End": true } } });
    assert_eq!(errors(def), Vec::<String>::new());
}

/// T: a JSONPath state's Assign with `.$` fields.
#[test]
fn jsonpath_assign() {
    let mut r = rng();
    let got = jsonata::jsonpath_assign(
        &json!({ "id.$": "$.order.id", "exec.$": "$$.Execution.Id", "n.$": "States.MathAdd($.n, 1)", "fixed": { "k": "v" } }),
        &json!({ "order": { "id": "o-1" }, "n": 1 }),
        &ctx(),
        &Variables::new(),
        &mut r,
    )
    .unwrap();
    assert_eq!(
        Value::Object(got),
        json!({ "id": "o-1", "exec": "arn:aws:states:us-east-1:1:execution:m:e1", "n": 2, "fixed": { "k": "v" } })
    );
}

fn errors(def: Value) -> Vec<String> {
    validate(&def.to_string())
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect()
}

/// Validation of JSONata machines: expressions parse, fields of the other language and
/// JSONPath states under a JSONata top level (S) are refused, Assign names (V).
#[test]
fn validation() {
    let ok = json!({ "QueryLanguage": "JSONata", "StartAt": "T", "States": {
        "T": { "Type": "Task", "Resource": "arn:aws:states:::lambda:invoke", "Arguments": { "x": "{% $states.input.x %}" },
               "TimeoutSeconds": "{% 10 %}", "Output": "{% $states.result %}", "Assign": { "r": "{% $states.result %}" },
               "Catch": [{ "ErrorEquals": ["States.ALL"], "Next": "F", "Output": "{% $states.errorOutput %}", "Assign": { "e": 1 } }], "Next": "C" },
        "C": { "Type": "Choice", "Choices": [{ "Condition": "{% $r.ok %}", "Next": "W", "Assign": { "k": 1 } }], "Default": "F" },
        "W": { "Type": "Wait", "Seconds": "{% 1 %}", "Next": "M" },
        "M": { "Type": "Map", "Items": "{% [1, 2] %}", "ItemSelector": { "v": "{% $states.context.Map.Item.Value %}" }, "Next": "P",
               "ItemProcessor": { "StartAt": "I", "States": { "I": { "Type": "Pass", "Assign": { "inner": 1 }, "End": true } } } },
        "P": { "Type": "Pass", "Output": { "done": true }, "End": true },
        "F": { "Type": "Fail", "Error": "{% 'E' %}", "Cause": "c" }
    } });
    assert_eq!(errors(ok.clone()), Vec::<String>::new());
    StateMachine::parse(&ok.to_string()).unwrap();

    let jsonata_machine =
        |states: Value| json!({ "QueryLanguage": "JSONata", "StartAt": "A", "States": states });
    let cases: Vec<(Value, &str)> = vec![
        (
            jsonata_machine(
                json!({ "A": { "Type": "Pass", "Output": "{% $states.input. %}", "End": true } }),
            ),
            "INVALID_JSONATA_EXPRESSION: The JSONata expression '$states.input.' in field 'Output' is invalid",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Pass", "Output": { "a": { "b": "{% ( %}" } }, "End": true } }),
            ),
            "at /States/A/Output/a/b",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Pass", "Output": { "a.$": "$.x" }, "End": true } }),
            ),
            "names ending in '.$' are not supported",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Pass", "Parameters": { "a": 1 }, "End": true } }),
            ),
            "The QueryLanguage is set to 'JSONata', but field 'Parameters' is only supported for the 'JSONPath' QueryLanguage at /States/A",
        ),
        (
            jsonata_machine(json!({ "A": { "Type": "Pass", "Result": 1, "End": true } })),
            "but field 'Result' is only supported for the 'JSONPath' QueryLanguage",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Pass", "QueryLanguage": "JSONPath", "End": true } }),
            ),
            "'QueryLanguage' can not be 'JSONPath' if set to 'JSONata' for whole state machine at /States/A",
        ),
        // Branches and processors are not states: no QueryLanguage of their own.
        (
            json!({ "StartAt": "A", "States": { "A": { "Type": "Parallel", "End": true, "Branches": [
                { "QueryLanguage": "JSONata", "StartAt": "B", "States": { "B": { "Type": "Succeed" } } }] } } }),
            "Field 'QueryLanguage' is not supported at /States/A/Branches/0/QueryLanguage",
        ),
        // A JSONata Map's processor states fall back to the machine's language (JSONPath).
        (
            json!({ "StartAt": "M", "States": { "M": { "Type": "Map", "QueryLanguage": "JSONata", "End": true,
                "ItemProcessor": { "StartAt": "I", "States": { "I": { "Type": "Pass", "Output": 1, "End": true } } } } } }),
            "field 'Output' is only supported for the 'JSONata' QueryLanguage at /States/M/ItemProcessor/States/I",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Pass", "Assign": { "states": 1 }, "End": true } }),
            ),
            "Invalid variable name 'states'",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Pass", "Assign": { "1x": 1, "a-b": 2 }, "End": true } }),
            ),
            "Invalid variable name '1x'",
        ),
        (
            jsonata_machine(json!({ "A": { "Type": "Pass", "Assign": [1], "End": true } })),
            "Field 'Assign' must be a JSON object",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Choice", "Choices": [{ "Variable": "$.x", "IsPresent": true, "Next": "B" }] }, "B": { "Type": "Succeed" } }),
            ),
            "needs a 'Condition' field",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Choice", "Choices": [{ "Condition": "true", "Next": "B" }] }, "B": { "Type": "Succeed" } }),
            ),
            "must be a JSONata expression",
        ),
        (
            jsonata_machine(json!({ "A": { "Type": "Wait", "Seconds": "soon", "End": true } })),
            "Field 'Seconds' must be a non-negative integer",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Task", "Resource": "r", "TimeoutSeconds": "ten", "End": true } }),
            ),
            "Field 'TimeoutSeconds' must be a number or a JSONata expression",
        ),
        (
            jsonata_machine(
                json!({ "A": { "Type": "Map", "Items": { "a": 1 }, "End": true,
            "ItemProcessor": { "StartAt": "I", "States": { "I": { "Type": "Pass", "End": true } } } } }),
            ),
            "Field 'Items' must be a JSON array or a JSONata expression",
        ),
        (
            jsonata_machine(json!({ "A": { "Type": "Task", "Resource": "r", "End": true,
            "Catch": [{ "ErrorEquals": ["States.ALL"], "ResultPath": "$.e", "Next": "A" }] } })),
            "Field 'ResultPath' is not supported with the JSONata query language",
        ),
        // V: a Map iteration cannot assign a variable of the enclosing scope.
        (
            jsonata_machine(
                json!({ "A": { "Type": "Pass", "Assign": { "total": 0 }, "Next": "M" },
            "M": { "Type": "Map", "End": true, "ItemProcessor": { "StartAt": "I", "States": {
                "I": { "Type": "Pass", "Assign": { "total": 1 }, "End": true } } } } }),
            ),
            "Variable 'total' is assigned in an enclosing scope",
        ),
        // JSONPath machine: JSONata-only fields are refused.
        (
            json!({ "StartAt": "A", "States": { "A": { "Type": "Choice", "Choices": [{ "Condition": "{% true %}", "Next": "B" }] }, "B": { "Type": "Succeed" } } }),
            "Field 'Condition' is only supported with the JSONata query language",
        ),
        (
            json!({ "StartAt": "A", "States": { "A": { "Type": "Wait", "Seconds": "{% 1 %}", "End": true } } }),
            "Field 'Seconds' must be a non-negative integer",
        ),
        (
            json!({ "StartAt": "A", "States": { "A": { "Type": "Pass", "Assign": { "x.$": "$.a[" }, "End": true } } }),
            "must be a valid JSONPath",
        ),
    ];
    for (def, needle) in cases {
        let errs = errors(def.clone());
        assert!(
            errs.iter().any(|e| e.contains(needle)),
            "want {needle:?} in {errs:#?}\nfor {def}"
        );
    }

    // A JSONata state in a JSONPath machine is allowed (S), and a JSONPath Assign may read
    // variables and the input.
    let mixed = json!({ "StartAt": "A", "States": {
        "A": { "Type": "Pass", "QueryLanguage": "JSONata", "Output": "{% $states.input %}", "Assign": { "v": 1 }, "Next": "B" },
        "B": { "Type": "Pass", "Assign": { "w.$": "$v", "x.$": "$.a", "y": 2 }, "End": true } } });
    assert_eq!(errors(mixed), Vec::<String>::new());
}
