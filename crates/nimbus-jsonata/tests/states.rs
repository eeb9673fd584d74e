//! Expressions as Step Functions users write them (`{% … %}` bodies with `$states` and
//! `Assign` variables), and the native-function API the flows engine uses.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::check;
use nimbus_jsonata::{Bindings, Error, Expression};
use serde_json::{json, Value};

fn states() -> Bindings {
    Bindings::new()
        .with(
            "states",
            json!({
                "input": {
                    "orderId": 1042,
                    "customer": "acme",
                    "status": "ok",
                    "order": {"items": [
                        {"sku": "A", "price": 5, "qty": 2},
                        {"sku": "B", "price": 15, "qty": 1},
                        {"sku": "C", "price": 25.5, "qty": 3}
                    ]},
                    "items": [{"qty": 2, "price": 5}, {"qty": 1, "price": 3}],
                    "list": [1, 2, 3],
                    "empty": []
                },
                "result": {"Payload": {"ok": true, "id": "r-1"}},
                "errorOutput": {"Error": "States.TaskFailed", "Cause": "boom"},
                "context": {"Execution": {"Id": "arn:aws:states:us-east-1:123:execution:m:e1", "Input": {}},
                            "State": {"Name": "Charge", "RetryCount": 0}}
            }),
        )
        .with("total", json!(40))
        .with("names", json!(["x", "y"]))
}

#[test]
fn states_expressions() {
    let b = states();
    let null = Value::Null;
    let rows: &[(&str, Option<Value>)] = &[
        ("$states.input.order.items[price > 10].sku", Some(json!(["B", "C"]))),
        ("$states.input.order.items[price > 20].sku", Some(json!("C"))),
        ("$states.input.order.items[price > 20].sku[]", Some(json!(["C"]))),
        ("$states.input.order.items[price > 100].sku", None),
        ("$sum($states.input.items.(qty * price))", Some(json!(13))),
        ("$sum($states.input.order.items.(qty * price))", Some(json!(101.5))),
        ("$map($states.input.list, function($v){ $v * 2 })", Some(json!([2, 4, 6]))),
        ("$filter($states.input.list, function($v){ $v > 1 })", Some(json!([2, 3]))),
        ("$reduce($states.input.list, function($acc, $v){ $acc + $v }, 0)", Some(json!(6))),
        ("$string($states.input.orderId) & \"-\" & $states.input.customer", Some(json!("1042-acme"))),
        ("$states.input.status = \"ok\" ? \"done\" : \"retry\"", Some(json!("done"))),
        (
            "{\"id\": $states.input.orderId, \"total\": $sum($states.input.order.items.(qty * price)), \"skus\": $states.input.order.items.sku}",
            Some(json!({"id": 1042, "total": 101.5, "skus": ["A", "B", "C"]})),
        ),
        ("$states.result.Payload.id", Some(json!("r-1"))),
        ("$states.errorOutput.Error", Some(json!("States.TaskFailed"))),
        ("$states.context.Execution.Id", Some(json!("arn:aws:states:us-east-1:123:execution:m:e1"))),
        ("$states.context.State.RetryCount < 3", Some(json!(true))),
        ("$total + 2", Some(json!(42))),
        ("$names[1]", Some(json!("y"))),
        ("$count($states.input.empty)", Some(json!(0))),
        ("$states.input.missing", None),
        ("$states.input.missing ?? 'fallback'", Some(json!("fallback"))),
        ("$exists($states.input.missing)", Some(json!(false))),
        ("$states.input.order.items^(>price)[0].sku", Some(json!("C"))),
        ("$states.input.order.items{sku: qty}", Some(json!({"A": 2, "B": 1, "C": 3}))),
        (
            "$states.input.order.items.{\"sku\": sku, \"amount\": qty * price}",
            Some(json!([{"sku": "A", "amount": 10}, {"sku": "B", "amount": 15}, {"sku": "C", "amount": 76.5}])),
        ),
        ("$max($states.input.order.items.price)", Some(json!(25.5))),
        ("$join($states.input.order.items.sku, ',')", Some(json!("A,B,C"))),
        ("$uppercase($states.input.customer)", Some(json!("ACME"))),
        ("$states.input.list[$ > 1]", Some(json!([2, 3]))),
        ("$states.input.order.items[0]", Some(json!({"sku": "A", "price": 5, "qty": 2}))),
        ("$merge([$states.input.order.items[0], {\"qty\": 9}])", Some(json!({"sku": "A", "price": 5, "qty": 9}))),
        ("($states.input ~> |order.items|{'checked': true}|).order.items.checked", Some(json!([true, true, true]))),
        ("($x := $states.input.list; $x[-1])", Some(json!(3))),
    ];
    for (expr, expected) in rows {
        check(expr, &null, &b, expected.clone());
    }
    // the input argument is the context (`$`) and the root (`$$`)
    let input = json!({"order": {"items": [{"sku": "A"}]}});
    check("order.items[0].sku", &input, &b, Some(json!("A")));
    check(
        "order.items.($$.order.items[0].sku)",
        &input,
        &b,
        Some(json!("A")),
    );
}

#[test]
fn native_functions_extend_the_library() {
    let mut b = states();
    // $partition, as the flows engine adds it
    b.register("partition", 2, |args: &[Option<Value>]| {
        let arr = args.first().cloned().flatten().unwrap_or(json!([]));
        let size = args
            .get(1)
            .cloned()
            .flatten()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if size == 0 {
            return Err(Error::new(
                "States.QueryEvaluationError",
                "chunk size must be positive",
                None,
            ));
        }
        let items = arr.as_array().cloned().unwrap_or_default();
        Ok(Some(Value::Array(
            items
                .chunks(size as usize)
                .map(|c| Value::Array(c.to_vec()))
                .collect(),
        )))
    });
    // a seeded $random shadows the built-in
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    b.register("random", 0, move |_| {
        Ok(Some(json!(c.fetch_add(1, Ordering::SeqCst) as f64 / 10.0)))
    });
    b.register("uuid", 0, |_| {
        Ok(Some(json!("00000000-0000-4000-8000-000000000000")))
    });
    b.register("undefinedFn", 0, |_| Ok(None));
    let null = Value::Null;
    check(
        "$partition([1, 2, 3, 4, 5], 2)",
        &null,
        &b,
        Some(json!([[1, 2], [3, 4], [5]])),
    );
    check(
        "$partition($states.input.list, 2)[1]",
        &null,
        &b,
        Some(json!([3])),
    );
    check("[$random(), $random()]", &null, &b, Some(json!([0.0, 0.1])));
    check(
        "$uuid()",
        &null,
        &b,
        Some(json!("00000000-0000-4000-8000-000000000000")),
    );
    check("$undefinedFn()", &null, &b, None);
    check(
        "$map([[1, 2, 3]], $partition(?, 1))",
        &null,
        &b,
        Some(json!([[1], [2], [3]])),
    );
    check("$type($partition)", &null, &b, Some(json!("function")));
    let err = Expression::parse("$partition([1], 0)")
        .unwrap()
        .evaluate(&null, &b)
        .unwrap_err();
    assert_eq!(err.code, "States.QueryEvaluationError");
    assert!(err.position.is_some());
}

#[test]
fn expressions_are_send_sync_and_reusable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expression>();
    assert_send_sync::<Bindings>();
    let e = Expression::parse("$sum($) * 2").unwrap();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let e = e.clone();
            std::thread::spawn(move || e.evaluate(&json!([i, 1]), &Bindings::new()).unwrap())
        })
        .collect();
    let got: Vec<Option<Value>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        got,
        vec![
            Some(json!(2)),
            Some(json!(4)),
            Some(json!(6)),
            Some(json!(8))
        ]
    );
    assert_eq!(e.source(), "$sum($) * 2");
}

#[test]
fn undefined_input_and_outputs() {
    let b = Bindings::new();
    let e = Expression::parse("$").unwrap();
    assert_eq!(e.evaluate_opt(None, &b).unwrap(), None);
    // functions in results are dropped as JSON.stringify does
    let e = Expression::parse("{'f': function(){1}, 'n': 1}").unwrap();
    assert_eq!(e.evaluate(&Value::Null, &b).unwrap(), Some(json!({"n": 1})));
    let e = Expression::parse("[1, function(){1}]").unwrap();
    assert_eq!(
        e.evaluate(&Value::Null, &b).unwrap(),
        Some(json!([1, null]))
    );
    // integers stay integers
    let e = Expression::parse("6 / 2").unwrap();
    assert_eq!(e.evaluate(&Value::Null, &b).unwrap(), Some(json!(3)));
    // infinite results are D1001
    let err = Expression::parse("1 / 0")
        .unwrap()
        .evaluate(&Value::Null, &b)
        .unwrap_err();
    assert_eq!(err.code, "D1001");
}

#[test]
fn shared_bindings_are_read_in_place() {
    let payload = Arc::new(json!({
        "input": {"order": {"id": 7, "items": [{"sku": "A", "n": 1}, {"sku": "B", "n": 2}]}, "tags": ["x", "y"]}
    }));
    let mut b = Bindings::new();
    b.bind_shared("states", payload.clone());
    let null = Value::Null;
    let rows: &[(&str, Value)] = &[
        (
            "$states.input.order",
            json!({"id": 7, "items": [{"sku": "A", "n": 1}, {"sku": "B", "n": 2}]}),
        ),
        ("$states.input.order.items[1]", json!({"sku": "B", "n": 2})),
        (
            "$states.input.order.items[0] = {'sku': 'A', 'n': 1}",
            json!(true),
        ),
        (
            "$states.input.order.items[0] = $states.input.order.items[0]",
            json!(true),
        ),
        ("$type($states.input)", json!("object")),
        ("$keys($states.input.order)", json!(["id", "items"])),
        // Fields in document order (serde_json keeps it: `preserve_order`).
        ("$states.input.order.items.*", json!(["A", 1, "B", 2])),
        ("$states.input.**.sku", json!(["A", "B"])),
        (
            "$string($states.input.order.items[0])",
            json!("{\"sku\":\"A\",\"n\":1}"),
        ),
        (
            "$merge($states.input.order.items)",
            json!({"sku": "B", "n": 2}),
        ),
        (
            "$each($states.input.order.items[0], function($v, $k){ $k })",
            json!(["sku", "n"]),
        ),
        ("$boolean($states.input.order)", json!(true)),
        ("$states.input.order.items{sku: n}", json!({"A": 1, "B": 2})),
        ("$states.input.order.items^(>n).sku", json!(["B", "A"])),
        (
            "$states.input.order.items#$i.{'i': $i, 's': sku}",
            json!([{"i": 0, "s": "A"}, {"i": 1, "s": "B"}]),
        ),
        ("($o := $states.input.order; $o.id + 1)", json!(8)),
        ("($states.input ~> |order|{'id': 8}|).order.id", json!(8)),
        ("$states.input.tags", json!(["x", "y"])),
        (
            "$states.input.order.items.$",
            json!([{"sku": "A", "n": 1}, {"sku": "B", "n": 2}]),
        ),
    ];
    for (expr, expected) in rows {
        check(expr, &null, &b, Some(expected.clone()));
    }
    // a shared input is the context
    let e = Expression::parse("order.items[n > 1].sku").unwrap();
    assert_eq!(
        e.evaluate_shared(Some(Arc::new(payload["input"].clone())), &b)
            .unwrap(),
        Some(json!("B"))
    );
}
