//! Runs JSONata's language-neutral test suite (cases from jsonata-js/jsonata's
//! `test/test-suite`, MIT licence; see `tests/suite/README.md`).
//!
//! By default it runs the vendored cases in `tests/suite/groups` (one file of cases per
//! group), every one of which must pass. `JSONATA_SUITE=/path/to/test-suite` runs another copy and only reports the
//! pass rate per group (`JSONATA_SUITE_STRICT=1` to fail on any failure there too).

use std::path::{Path, PathBuf};
use std::time::Duration;

use nimbus_jsonata::{Bindings, Expression, Limits};
use serde_json::Value;

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || ((x - y).abs() <= 1e-10 * x.abs().max(y.abs()))
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

/// Runs one case; `Err` describes the failure.
fn run_case(root: &Path, group: &Path, case: &Value) -> Result<(), String> {
    let expr_file;
    let expr = match case.get("expr-file").and_then(Value::as_str) {
        Some(f) => {
            expr_file = std::fs::read_to_string(group.join(f)).map_err(|e| e.to_string())?;
            expr_file.as_str()
        }
        None => case["expr"].as_str().ok_or("no expr")?,
    };
    let input: Option<Value> = if let Some(d) = case.get("data") {
        Some(d.clone())
    } else {
        match case.get("dataset").and_then(Value::as_str) {
            Some(name) => {
                let text =
                    std::fs::read_to_string(root.join("datasets").join(format!("{name}.json")))
                        .map_err(|e| e.to_string())?;
                Some(serde_json::from_str(&text).map_err(|e| e.to_string())?)
            }
            None => None,
        }
    };
    let mut bindings = Bindings::new();
    if let Some(Value::Object(b)) = case.get("bindings") {
        for (k, v) in b {
            bindings.bind(k.clone(), v.clone());
        }
    }
    let mut limits = Limits::default();
    if let Some(t) = case.get("timelimit").and_then(Value::as_u64) {
        limits.timeout = Some(Duration::from_millis(t));
    }
    if let Some(d) = case.get("depth").and_then(Value::as_u64) {
        limits.max_depth = d as usize;
    }
    bindings.set_limits(limits);
    let expected_code = case.get("code").and_then(Value::as_str).or_else(|| {
        case.get("error")
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
    });
    let got = Expression::parse(expr).and_then(|e| e.evaluate_opt(input.as_ref(), &bindings));
    match (got, expected_code) {
        (Err(e), Some(code)) if e.code == code => Ok(()),
        (Err(e), Some(code)) => Err(format!("expected error {code}, got error {e}")),
        (Err(e), None) => Err(format!("error {e}")),
        (Ok(v), Some(code)) => Err(format!("expected error {code}, got {v:?}")),
        (Ok(v), None) => {
            if case.get("undefinedResult").and_then(Value::as_bool) == Some(true) {
                return if v.is_none() {
                    Ok(())
                } else {
                    Err(format!("expected undefined, got {v:?}"))
                };
            }
            let Some(expected) = case.get("result") else {
                return Err("case has no result".into());
            };
            match v {
                Some(v) if close(&v, expected) => Ok(()),
                other => Err(format!("expected {expected}, got {other:?}")),
            }
        }
    }
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn run_suite(root: &Path) -> (usize, usize, Vec<String>) {
    let (mut pass, mut total) = (0, 0);
    let mut failures = Vec::new();
    for group in cases(&root.join("groups")) {
        let (mut gp, mut gt) = (0, 0);
        // a group is a directory of case files (upstream) or one file of cases (vendored)
        let files = if group.is_file() {
            vec![group.clone()]
        } else {
            cases(&group)
        };
        for file in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "json"))
        {
            let text = std::fs::read_to_string(&file).expect("read case");
            let parsed: Value = match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    // e.g. lone surrogates, which serde_json rejects
                    gt += 1;
                    failures.push(format!("{}: unreadable case: {e}", file.display()));
                    continue;
                }
            };
            let list = match parsed {
                Value::Array(a) => a,
                v => vec![v],
            };
            for case in list {
                gt += 1;
                match run_case(root, &group, &case) {
                    Ok(()) => gp += 1,
                    Err(e) => failures.push(format!("{}: {} => {e}", file.display(), case["expr"])),
                }
            }
        }
        println!(
            "{:<40} {gp}/{gt}",
            group.file_name().unwrap_or_default().to_string_lossy()
        );
        pass += gp;
        total += gt;
    }
    (pass, total, failures)
}

#[test]
fn jsonata_test_suite() {
    let external = std::env::var_os("JSONATA_SUITE");
    let root = external
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suite"));
    let (pass, total, failures) = run_suite(&root);
    for f in &failures {
        println!("FAIL {f}");
    }
    println!("passed {pass}/{total}");
    let strict = external.is_none() || std::env::var_os("JSONATA_SUITE_STRICT").is_some();
    if strict {
        assert!(
            failures.is_empty(),
            "{} of {total} cases failed",
            failures.len()
        );
    }
    assert!(
        total > 0 || external.is_some(),
        "no cases found under {}",
        root.display()
    );
}
