//! Times parsing and evaluation of typical workflow expressions:
//! `cargo run --release -p nimbus-jsonata --example measure`.

use std::time::Instant;

use nimbus_jsonata::{Bindings, Expression};
use serde_json::json;

fn main() {
    let items: Vec<_> = (0..100)
        .map(|i| json!({"sku": format!("S{i}"), "price": i, "qty": i % 7}))
        .collect();
    let bindings = Bindings::new().with(
        "states",
        json!({"input": {"order": {"items": items}, "customer": "acme", "id": 7}}),
    );
    let exprs = [
        "$states.input.order.items[price > 10].sku",
        "$sum($states.input.order.items.(qty * price))",
        "$map($states.input.order.items, function($v){ $v.price * 2 })",
        "{\"id\": $string($states.input.id) & \"-\" & $states.input.customer, \"n\": $count($states.input.order.items)}",
        "$states.input.order.items^(>price)[0].sku",
    ];
    for src in exprs {
        let n = 2_000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(Expression::parse(src).unwrap());
        }
        let parse = t.elapsed() / n;
        let e = Expression::parse(src).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(e.evaluate(&serde_json::Value::Null, &bindings).unwrap());
        }
        let eval = t.elapsed() / n;
        println!("{parse:>10.2?} parse {eval:>10.2?} evaluate  {src}");
    }
    // a payload near Step Functions' 256 KiB limit: the cost of converting `$states`
    let big: Vec<_> = (0..2_500)
        .map(|i| json!({"sku": format!("SKU-{i:06}"), "price": i, "qty": i % 7, "note": "x".repeat(40)}))
        .collect();
    let size = serde_json::to_vec(&big).unwrap().len();
    let bindings = Bindings::new().with("states", json!({"input": {"items": big}}));
    let e = Expression::parse("$states.input.items[0].sku").unwrap();
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(e.evaluate(&serde_json::Value::Null, &bindings).unwrap());
    }
    println!(
        "{:>10.2?} evaluate  $states.input.items[0].sku over a {size}-byte $states",
        t.elapsed() / n
    );
    // a million lambda calls: time and peak memory (frames are freed after each call)
    let mut b = Bindings::new();
    b.set_limits(nimbus_jsonata::Limits {
        max_steps: 100_000_000,
        timeout: None,
        ..Default::default()
    });
    let e = Expression::parse("$count($map([1..1000000], function($v){ $v + 1 }))").unwrap();
    let t = Instant::now();
    let r = e.evaluate(&serde_json::Value::Null, &b).unwrap();
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    println!(
        "{:>10.2?} evaluate  $map over 1,000,000 items -> {r:?}; peak {hwm}",
        t.elapsed()
    );
}
