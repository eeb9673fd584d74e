//! Shared helpers for the table-driven tests.

#![allow(dead_code)]

use nimbus_jsonata::{Bindings, Expression};
use serde_json::{json, Value};

/// The "Fred Smith" document of <https://docs.jsonata.org/simple>.
pub fn address() -> Value {
    json!({
        "FirstName": "Fred",
        "Surname": "Smith",
        "Age": 28,
        "Address": {"Street": "Hursley Park", "City": "Winchester", "Postcode": "SO21 2JN"},
        "Phone": [
            {"type": "home", "number": "0203 544 1234"},
            {"type": "office", "number": "01962 001234"},
            {"type": "office", "number": "01962 001235"},
            {"type": "mobile", "number": "077 7700 1234"}
        ],
        "Email": [
            {"type": "work", "address": ["fred.smith@my-work.com", "fsmith@my-work.com"]},
            {"type": "home", "address": ["freddy@my-social.com", "frederic.smith@very-serious.com"]}
        ],
        "Other": {
            "Over 18 ?": true,
            "Misc": null,
            "Alternative.Address": {"Street": "Brick Lane", "City": "London", "Postcode": "E1 6RF"}
        }
    })
}

/// The invoice document used across <https://docs.jsonata.org> (predicates, sorting,
/// grouping, higher-order functions).
pub fn invoice() -> Value {
    json!({
        "Account": {
            "Account Name": "Firefly",
            "Order": [
                {
                    "OrderID": "order103",
                    "Product": [
                        {"Product Name": "Bowler Hat", "ProductID": 858383, "SKU": "0406654608",
                         "Description": {"Colour": "Purple", "Width": 300, "Height": 200, "Depth": 210, "Weight": 0.75},
                         "Price": 34.45, "Quantity": 2},
                        {"Product Name": "Trilby hat", "ProductID": 858236, "SKU": "0406634348",
                         "Description": {"Colour": "Orange", "Width": 300, "Height": 200, "Depth": 210, "Weight": 0.6},
                         "Price": 21.67, "Quantity": 1}
                    ]
                },
                {
                    "OrderID": "order104",
                    "Product": [
                        {"Product Name": "Bowler Hat", "ProductID": 858383, "SKU": "040657863",
                         "Description": {"Colour": "Purple", "Width": 300, "Height": 200, "Depth": 210, "Weight": 0.75},
                         "Price": 34.45, "Quantity": 4},
                        {"ProductID": 345664, "SKU": "0406654603", "Product Name": "Cloak",
                         "Description": {"Colour": "Black", "Width": 30, "Height": 20, "Depth": 210, "Weight": 2},
                         "Price": 107.99, "Quantity": 1}
                    ]
                }
            ]
        }
    })
}

/// Evaluates and compares with the expected JSON (`None` = undefined); numbers compare
/// with a relative tolerance of 1e-12.
pub fn check(expr: &str, input: &Value, bindings: &Bindings, expected: Option<Value>) {
    let e = Expression::parse(expr).unwrap_or_else(|e| panic!("parse {expr:?}: {e}"));
    let got = e
        .evaluate(input, bindings)
        .unwrap_or_else(|e| panic!("evaluate {expr:?}: {e}"));
    let ok = match (&got, &expected) {
        (Some(g), Some(x)) => close(g, x),
        (None, None) => true,
        _ => false,
    };
    assert!(ok, "{expr}\n  expected {expected:?}\n  got      {got:?}");
}

/// Expects the error code.
pub fn check_err(expr: &str, input: &Value, bindings: &Bindings, code: &str) {
    let r = Expression::parse(expr).and_then(|e| e.evaluate(input, bindings));
    match r {
        Err(e) => assert_eq!(e.code, code, "{expr}: expected {code}, got {e}"),
        Ok(v) => panic!("{expr}: expected error {code}, got {v:?}"),
    }
}

pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// Runs a table of `(expression, expected JSON text or "undefined")`.
pub fn table(input: &Value, rows: &[(&str, &str)]) {
    let b = Bindings::new();
    for (expr, expected) in rows {
        let expected = if *expected == "undefined" {
            None
        } else {
            Some(
                serde_json::from_str(expected)
                    .unwrap_or_else(|e| panic!("bad expected JSON for {expr}: {e}")),
            )
        };
        check(expr, input, &b, expected);
    }
}

/// Runs a table of `(expression, error code)`.
pub fn error_table(input: &Value, rows: &[(&str, &str)]) {
    let b = Bindings::new();
    for (expr, code) in rows {
        check_err(expr, input, &b, code);
    }
}
