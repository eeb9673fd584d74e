//! Intrinsic functions, one case per function, expectations from the AWS developer guide:
//! https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html
//! (unless a case cites another page).

use nimbus_flows::intrinsics::Call;
use rand::SeedableRng;
use serde_json::{json, Value};

fn eval(call: &str, input: Value) -> Result<Value, nimbus_flows::Error> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    Call::parse(call)?.eval(
        &input,
        &json!({ "Execution": { "Id": "exec-1" } }),
        &mut rng,
    )
}

#[test]
fn documented_examples() {
    let cases: &[(&str, Value, Value)] = &[
        ("States.Format('Hello, my name is {}.', $.name)", json!({ "name": "Arnav" }), json!("Hello, my name is Arnav.")),
        ("States.StringToJson($.escapedJsonString)", json!({ "escapedJsonString": "{\"foo\": \"bar\"}" }), json!({ "foo": "bar" })),
        ("States.JsonToString($.unescapedJson)", json!({ "unescapedJson": { "foo": "bar" } }), json!("{\"foo\":\"bar\"}")),
        ("States.Array($.Id)", json!({ "Id": 123456 }), json!([123456])),
        ("States.ArrayPartition($.inputArray,4)", json!({ "inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9] }), json!([[1, 2, 3, 4], [5, 6, 7, 8], [9]])),
        ("States.ArrayContains($.inputArray, $.lookingFor)", json!({ "inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9], "lookingFor": 5 }), json!(true)),
        ("States.ArrayRange(1, 9, 2)", json!({}), json!([1, 3, 5, 7, 9])),
        ("States.ArrayGetItem($.inputArray, $.index)", json!({ "inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9], "index": 5 }), json!(6)),
        ("States.ArrayLength($.inputArray)", json!({ "inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9] }), json!(9)),
        ("States.ArrayUnique($.inputArray)", json!({ "inputArray": [1, 2, 3, 3, 3, 3, 3, 3, 4] }), json!([1, 2, 3, 4])),
        ("States.Base64Encode($.input)", json!({ "input": "Data to encode" }), json!("RGF0YSB0byBlbmNvZGU=")),
        ("States.Base64Decode($.base64)", json!({ "base64": "RGF0YSB0byBlbmNvZGU=" }), json!("Data to encode")),
        ("States.Hash($.Data, $.Algorithm)", json!({ "Data": "input data", "Algorithm": "SHA-1" }), json!("aaff4a450a104cd177d28d18d74485e8cae074b7")),
        (
            "States.JsonMerge($.json1, $.json2, false)",
            json!({ "json1": { "a": { "a1": 1, "a2": 2 }, "b": 2 }, "json2": { "a": { "a3": 1, "a4": 2 }, "c": 3 } }),
            json!({ "a": { "a3": 1, "a4": 2 }, "b": 2, "c": 3 }),
        ),
        ("States.MathAdd($.value1, $.step)", json!({ "value1": 111, "step": -1 }), json!(110)),
        ("States.StringSplit($.inputString, $.splitter)", json!({ "inputString": "1,2,3,4,5", "splitter": "," }), json!(["1", "2", "3", "4", "5"])),
        (
            "States.StringSplit($.inputString, $.splitter)",
            json!({ "inputString": "This.is+a,test=string", "splitter": ".+,=" }),
            json!(["This", "is", "a", "test", "string"]),
        ),
        // Nesting and the context object.
        ("States.Format('{}-{}', $$.Execution.Id, States.ArrayLength(States.Array(1, 'a', null, true)))", json!({}), json!("exec-1-4")),
        // Escapes: \' inside a literal, \{ \} keep braces literal in States.Format.
        ("States.Format('it\\'s \\{{}\\}', $.x)", json!({ "x": "ok" }), json!("it's {ok}")),
        ("States.Format('{} {} {}', 1.5, true, null)", json!({}), json!("1.5 true null")),
    ];
    for (call, input, want) in cases {
        assert_eq!(
            &eval(call, input.clone()).unwrap_or_else(|e| panic!("{call}: {e}")),
            want,
            "{call}"
        );
    }
}

#[test]
fn hashes_every_algorithm() {
    // Known digests of "input data" for each algorithm States.Hash accepts.
    for (alg, len) in [
        ("MD5", 32),
        ("SHA-1", 40),
        ("SHA-256", 64),
        ("SHA-384", 96),
        ("SHA-512", 128),
    ] {
        let v = eval(&format!("States.Hash('input data', '{alg}')"), json!({})).unwrap();
        assert_eq!(v.as_str().map(str::len), Some(len), "{alg}");
    }
    let md5 = eval("States.Hash('input data', 'MD5')", json!({})).unwrap();
    assert_eq!(md5, json!("812f45842bc6d66ee14572ce20db8e86"));
}

#[test]
fn random_and_uuid() {
    let v = eval(
        "States.MathRandom($.start, $.end)",
        json!({ "start": 1, "end": 999 }),
    )
    .unwrap();
    assert!((1..999).contains(&v.as_i64().unwrap()));
    // With a seed the result is reproducible.
    let a = eval("States.MathRandom(1, 1000, 42)", json!({})).unwrap();
    let b = eval("States.MathRandom(1, 1000, 42)", json!({})).unwrap();
    assert_eq!(a, b);
    let id = eval("States.UUID()", json!({})).unwrap();
    let id = uuid::Uuid::parse_str(id.as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
}

#[test]
fn failures_are_intrinsic_failure() {
    for (call, input) in [
        ("States.ArrayRange(1, 2000, 1)", json!({})), // more than 1000 items
        ("States.ArrayGetItem($.a, 3)", json!({ "a": [1] })),
        (
            "States.JsonMerge($.a, $.b, true)",
            json!({ "a": {}, "b": {} }),
        ), // deep merge unsupported
        ("States.Hash('x', 'SHA-999')", json!({})),
        ("States.StringToJson('{nope')", json!({})),
        ("States.Format('{} {}', 'one')", json!({})),
        ("States.ArrayPartition($.a, 0)", json!({ "a": [1] })),
        ("States.MathAdd(2147483648, 1)", json!({})),
        ("States.Base64Decode('%%%')", json!({})),
        ("States.ArrayLength($.missing)", json!({})),
        ("States.ArrayLength('not an array')", json!({})),
    ] {
        let err = eval(call, input).expect_err(call);
        assert_eq!(err.error_name(), "States.IntrinsicFailure", "{call}: {err}");
    }
}

#[test]
fn parse_errors_name_and_arity() {
    for bad in [
        "States.Nope(1)",
        "States.ArrayLength()",
        "States.ArrayLength($.a, $.b)",
        "States.UUID(1)",
        "States.MathRandom(1)",
        "States.Format('x'",
        "States.Format('x') trailing",
        "States.Array(bogus)",
        "States.Array($.a[)",
        // 11 nested calls: more than the 10 allowed.
        "States.Array(States.Array(States.Array(States.Array(States.Array(States.Array(States.Array(States.Array(States.Array(States.Array(States.Array())))))))))))",
    ] {
        assert!(Call::parse(bad).is_err(), "{bad}");
    }
    // Deep nesting in the style of the guide's myArn example (its text is cut in our copy;
    // this version has two placeholders for its two arguments) is fine.
    let arn = "States.Format('{}.{}', States.ArrayGetItem(States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 0), States.ArrayGetItem(States.StringSplit(States.ArrayGetItem(States.StringSplit($.ImageRecipe.Arn, '/'), 2), '.'), 1))";
    let input = json!({ "ImageRecipe": { "Arn": "arn:aws:imagebuilder:us-east-1:123456789012:image-recipe/my-recipe/1.0.0" } });
    assert_eq!(eval(arn, input).unwrap(), json!("1.0"));
}
