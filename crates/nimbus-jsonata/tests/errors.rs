//! Error codes with positions (JSONata's error table, as used by its test suite), the
//! evaluation budgets and garbage input.

mod common;

use std::time::{Duration, Instant};

use common::error_table;
use nimbus_jsonata::{Bindings, Expression, Limits};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

#[test]
fn syntax_errors() {
    error_table(
        &Value::Null,
        &[
            ("\"abc", "S0101"),
            ("1e1000", "S0102"),
            ("\"\\q\"", "S0103"),
            ("\"\\u12\"", "S0104"),
            ("`abc", "S0105"),
            ("1 /* x", "S0106"),
            ("1 2", "S0201"),
            ("(1]", "S0202"),
            ("[1, 2", "S0203"),
            ("1 +", "S0207"),
            ("function(a){1}", "S0208"),
            ("a[1]{'x': 1}[0]", "S0209"),
            ("a{'x': 1}{'y': 2}", "S0210"),
            (")", "S0211"),
            ("1 := 2", "S0212"),
            ("($a := [1,2]; $a[1] := 3)", "S0212"),
            ("a.1", "S0213"),
            ("a.true", "S0213"),
            ("//", "S0301"),
            ("$match('a', /abc)", "S0302"),
            ("$match('a', /(?<=a)b/)", "S0303"),
            ("1 ! 2", "S0204"),
            ("[1!2]", "S0204"),
            ("a ~ b", "S0204"),
            ("#", "S0211"),
            ("a#1", "S0214"),
            ("a@$x[0]@$y", "S0215"),
        ],
    );
    let e = Expression::parse("Account.Order[0.OrderID").unwrap_err();
    assert_eq!(e.code, "S0203");
    let e = Expression::parse("foo + )").unwrap_err();
    assert_eq!((e.code, e.position), ("S0211", Some(6)));
    assert!(e.to_string().contains("S0211"));
}

#[test]
fn type_and_dynamic_errors() {
    let input = json!({"s": "x", "n": 1, "o": {}, "a": [1, "b"]});
    error_table(
        &input,
        &[
            ("s + 1", "T2001"),
            ("1 + s", "T2002"),
            ("o * 2", "T2001"),
            ("-s", "D1002"),
            ("[1.5..3]", "T2003"),
            ("[1..3.5]", "T2004"),
            ("[1..20000000]", "D2014"),
            ("1 ~> 2", "T2006"),
            ("1 < 'a'", "T2009"),
            ("o < 1", "T2010"),
            ("a^($)", "T2007"),
            ("[{'x': {}}, {'x': {}}]^(x)", "T2008"),
            ("{n: 1}", "T1003"),
            ("{'k': 1, 'k': 2}", "D1009"),
            ("$nothing()", "T1006"),
            ("uppercase('a')", "T1005"),
            ("$nothing(?)", "T1008"),
            ("substring(?, 1)", "T1007"),
            ("$uppercase(1)", "T0410"),
            ("$substring('abc')", "T0411"),
            ("$substring(1)", "T0411"),
            ("$sum(a)", "T0412"),
            ("$join(a)", "T0412"),
            ("$merge([1])", "T0412"),
            ("o.$length()", "T0411"),
            ("$string(1/0)", "D3001"),
            ("$replace('abc', '', 'x')", "D3010"),
            ("$replace('abc', 'a', 'x', -1)", "D3011"),
            ("$replace('abc', /b/, function($m){ 1 })", "D3012"),
            ("$replace('abc', /x*/, 'y')", "D1004"),
            ("$split('a', ',', -1)", "D3020"),
            ("$number('abc')", "D3030"),
            ("$number(o)", "T0410"),
            ("$sqrt(-1)", "D3060"),
            ("$power(10, 1000)", "D3061"),
            ("$sort([1, 'a'])", "D3070"),
            ("$formatBase(1, 40)", "D3100"),
            ("$decodeUrlComponent('%E0%A4%A')", "D3140"),
            ("$fromMillis(0, '[Y', '+0000')", "D3135"),
            ("$fromMillis(0, '[Y]', 'bad')", "D3134"),
            ("$eval('1 +')", "D3120"),
            ("$eval('[1, string(2)]')", "D3121"),
            ("%", "S0217"),
            ("%.a", "S0217"),
            ("a.(%.b)[0].%.%.%", "S0217"),
            ("$string(1, 2)", "T0410"),
            ("$length()", "T0411"),
            ("$fromMillis(1e300)", "D3110"),
            ("$number('1e400')", "D3030"),
            ("$fromMillis(0, '[Y]', 'ö123')", "D3134"),
        ],
    );
}

fn limited(limits: Limits) -> Bindings {
    let mut b = Bindings::new();
    b.set_limits(limits);
    b
}

#[test]
fn extreme_numbers_do_not_overflow() {
    common::table(
        &Value::Null,
        &[
            ("$round(1.5e300, 2147483647)", "1.5e300"),
            ("$round(1.5, -2147483648)", "0"),
            ("$substring('abc', 1e300)", r#""""#),
            ("$substring('abc', -1e300, 1e300)", r#""abc""#),
            ("[1, 2][1e300]", "undefined"),
            ("[1, 2][-1e300]", "undefined"),
            ("$formatBase(1e300, 36) ~> $length() > 10", "true"),
            ("$split('a,b', ',', 1e300)", r#"["a", "b"]"#),
            ("$string(-1e-300)", r#""-1e-300""#),
        ],
    );
}

#[test]
fn recursion_depth_is_bounded() {
    let b = Bindings::new();
    let e =
        Expression::parse("($f := function($n){ $n = 0 ? 0 : 1 + $f($n - 1) }; $f(100))").unwrap();
    assert_eq!(e.evaluate(&Value::Null, &b).unwrap(), Some(json!(100)));
    let e = Expression::parse("($f := function($n){ 1 + $f($n + 1) }; $f(0))").unwrap();
    let err = e.evaluate(&Value::Null, &b).unwrap_err();
    assert_eq!(err.code, "U1001");
    // calls in tail position loop instead of recursing (JSONata's tail-call optimisation)
    let tail = Expression::parse(
        "($even := function($n){ $n = 0 ? true : $odd($n - 1) }; $odd := function($n){ $n = 0 ? false : $even($n - 1) }; $odd(20001))",
    )
    .unwrap();
    assert_eq!(tail.evaluate(&Value::Null, &b).unwrap(), Some(json!(true)));
    let sum = Expression::parse("($s := function($n, $acc){ $n = 0 ? $acc : ($m := $n - 1; $s($m, $acc + $n)) }; $s(50000, 0))").unwrap();
    assert_eq!(
        sum.evaluate(&Value::Null, &b).unwrap(),
        Some(json!(1_250_025_000))
    );
    // an endless tail loop ends on the step budget
    let e = Expression::parse("($f := function($n){ $f($n + 1) }; $f(0))").unwrap();
    assert_eq!(e.evaluate(&Value::Null, &b).unwrap_err().code, "U1001");
    // a deep limit on a small thread stack still ends in an error, not an overflow
    let deep = limited(Limits {
        max_depth: 20_000,
        ..Limits::default()
    });
    let err = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || e.evaluate(&Value::Null, &deep).unwrap_err())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(err.code, "U1001");
}

#[test]
fn step_and_time_budgets_stop_hostile_expressions() {
    // an unbounded loop through $map over a large range: the step budget
    let b = limited(Limits {
        max_steps: 100_000,
        ..Limits::default()
    });
    let e = Expression::parse("$map([1..1000000], function($v){ $v * 2 })").unwrap();
    assert_eq!(e.evaluate(&Value::Null, &b).unwrap_err().code, "U1001");
    // exponential recursion: the wall clock
    let b = limited(Limits {
        max_steps: u64::MAX,
        timeout: Some(Duration::from_millis(200)),
        ..Limits::default()
    });
    let e = Expression::parse(
        "($fib := function($n){ $n <= 1 ? $n : $fib($n - 1) + $fib($n - 2) }; $fib(60))",
    )
    .unwrap();
    let start = Instant::now();
    assert_eq!(e.evaluate(&Value::Null, &b).unwrap_err().code, "U1001");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // the defaults stop it too
    let start = Instant::now();
    assert_eq!(
        e.evaluate(&Value::Null, &Bindings::new()).unwrap_err().code,
        "U1001"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    // huge padding counts against the budget
    let e = Expression::parse("$pad('x', 100000000)").unwrap();
    assert_eq!(
        e.evaluate(&Value::Null, &Bindings::new()).unwrap_err().code,
        "U1001"
    );
}

#[test]
fn deeply_nested_source_is_an_error_not_a_crash() {
    for src in [
        "(".repeat(100_000),
        "[".repeat(100_000),
        "-".repeat(100_000) + "1",
        "a.".repeat(50_000) + "a",
        "{'a':".repeat(50_000),
        format!("{}1{}", "(".repeat(150), ")".repeat(150)),
    ] {
        let r = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                Expression::parse(&src)
                    .and_then(|e| e.evaluate(&Value::Null, &Bindings::new()))
                    .map(|_| ())
            })
            .unwrap()
            .join()
            .expect("no panic");
        let _ = r;
    }
}

const PIECES: &[&str] = &[
    "a",
    "b",
    ".",
    "[",
    "]",
    "(",
    ")",
    "{",
    "}",
    ",",
    ";",
    ":",
    "?",
    "?:",
    "??",
    "+",
    "-",
    "*",
    "/",
    "%",
    "&",
    "=",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "~>",
    "..",
    ":=",
    "^(",
    "|",
    "**",
    "$",
    "$$",
    "$x",
    "$f",
    "1",
    "0",
    "-1",
    "2.5",
    "1e3",
    "\"s\"",
    "'t'",
    "`q q`",
    "true",
    "false",
    "null",
    "and",
    "or",
    "in",
    "function($x){",
    "λ($a,$b){",
    "/a+/i",
    "/*c*/",
    "$map(",
    "$filter(",
    "$reduce(",
    "$sort(",
    "$string(",
    "$sum(",
    "$count(",
    "$substring(",
    "$replace(",
    "$split(",
    "$match(",
    "$keys(",
    "$each(",
    "$eval(",
    "$pad(",
    "$formatNumber(",
    "$fromMillis(",
    "$now(",
    "@",
    "#",
    "\\",
    "\"",
    "'",
    "ö",
    " ",
    "1e300",
    "-2147483648",
    "9007199254740993",
    "0.5",
    "1e-320",
    "$round(",
    "$formatBase(",
    "$power(",
    "#$i",
    "@$v",
    "%",
];

#[test]
fn random_garbage_never_panics() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_1234);
    let input = json!({"a": [1, 2, {"b": "x"}], "b": {"c": [true, null]}, "s": "str"});
    let b = limited(Limits {
        max_depth: 200,
        max_steps: 20_000,
        timeout: Some(Duration::from_millis(100)),
    });
    let (mut parsed, mut evaluated) = (0, 0);
    for _ in 0..20_000 {
        let n = rng.random_range(1..14);
        let src: String = if rng.random_bool(0.1) {
            // raw random characters
            (0..rng.random_range(1..30))
                .map(|_| char::from_u32(rng.random_range(0..0x250)).unwrap_or('?'))
                .collect()
        } else {
            (0..n)
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect::<Vec<_>>()
                .join("")
        };
        if let Ok(e) = Expression::parse(&src) {
            parsed += 1;
            if e.evaluate(&input, &b).is_ok() {
                evaluated += 1;
            }
        }
    }
    assert!(parsed > 500, "only {parsed} random expressions parsed");
    assert!(
        evaluated > 100,
        "only {evaluated} random expressions evaluated"
    );
}

const ARGS: &[&str] = &[
    "()",
    "null",
    "true",
    "0",
    "-1",
    "0.5",
    "1e300",
    "-1e300",
    "2147483648",
    "''",
    "'abc'",
    "'ö𝄞'",
    "'[Y0001]'",
    "'#,##0.00'",
    "[]",
    "[1, 'a']",
    "[3, 1, 2]",
    "{}",
    "{'a': 1}",
    "function($a, $b){ $a }",
    "/a+/",
    "$string",
];

#[test]
fn every_builtin_with_odd_arguments_never_panics() {
    let b = limited(Limits {
        max_depth: 200,
        max_steps: 100_000,
        timeout: Some(Duration::from_millis(200)),
    });
    let input = json!({"a": [1, 2], "s": "x"});
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut runs = 0;
    for name in nimbus_jsonata::builtin_names() {
        let mut calls = vec![format!("${name}()")];
        for a in ARGS {
            calls.push(format!("${name}({a})"));
            for b2 in ARGS {
                calls.push(format!("${name}({a}, {b2})"));
            }
        }
        for _ in 0..100 {
            let mut pick = || ARGS[rng.random_range(0..ARGS.len())];
            let (x, y, z) = (pick(), pick(), pick());
            calls.push(format!("${name}({x}, {y}, {z})"));
        }
        for c in calls {
            let e = Expression::parse(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
            let _ = e.evaluate(&input, &b);
            runs += 1;
        }
    }
    assert!(runs > 30_000, "{runs}");
}
