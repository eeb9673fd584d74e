//! Examples from the JSONata documentation (<https://docs.jsonata.org>), one test per page.

mod common;

use common::{address, error_table, invoice, table};
use serde_json::json;

/// <https://docs.jsonata.org/simple>
#[test]
fn simple_queries() {
    table(
        &address(),
        &[
            ("Surname", r#""Smith""#),
            ("Age", "28"),
            ("Address.City", r#""Winchester""#),
            ("Other.Misc", "null"),
            ("Other.Nothing", "undefined"),
            ("Other.`Over 18 ?`", "true"),
            ("Phone[0]", r#"{"type": "home", "number": "0203 544 1234"}"#),
            (
                "Phone[1]",
                r#"{"type": "office", "number": "01962 001234"}"#,
            ),
            (
                "Phone[-1]",
                r#"{"type": "mobile", "number": "077 7700 1234"}"#,
            ),
            (
                "Phone[-2]",
                r#"{"type": "office", "number": "01962 001235"}"#,
            ),
            ("Phone[8]", "undefined"),
            ("Phone[0].number", r#""0203 544 1234""#),
            (
                "Phone.number",
                r#"["0203 544 1234", "01962 001234", "01962 001235", "077 7700 1234"]"#,
            ),
            (
                "Phone.number[0]",
                r#"["0203 544 1234", "01962 001234", "01962 001235", "077 7700 1234"]"#,
            ),
            ("(Phone.number)[0]", r#""0203 544 1234""#),
            (
                "Phone[[0..1]].number",
                r#"["0203 544 1234", "01962 001234"]"#,
            ),
            (
                "Phone[type='mobile']",
                r#"{"type": "mobile", "number": "077 7700 1234"}"#,
            ),
            ("Phone[type='mobile'].number", r#""077 7700 1234""#),
            (
                "Phone[type='office'].number",
                r#"["01962 001234", "01962 001235"]"#,
            ),
            (
                "Email.address",
                r#"["fred.smith@my-work.com", "fsmith@my-work.com", "freddy@my-social.com", "frederic.smith@very-serious.com"]"#,
            ),
            (
                "Email[0].address",
                r#"["fred.smith@my-work.com", "fsmith@my-work.com"]"#,
            ),
            (
                "Email[type='home'].address[1]",
                r#""frederic.smith@very-serious.com""#,
            ),
            ("Other.`Alternative.Address`.City", r#""London""#),
            (
                "[Address, Other.`Alternative.Address`].City",
                r#"["Winchester", "London"]"#,
            ),
            ("*.Postcode", r#""SO21 2JN""#),
            ("**.Postcode", r#"["SO21 2JN", "E1 6RF"]"#),
            ("$count(Address.*)", "3"),
            ("$.Surname", r#""Smith""#),
            ("$$.Age", "28"),
        ],
    );
    // a top-level array input (https://docs.jsonata.org/simple#top-level-arrays-nested-arrays-and-array-flattening)
    table(
        &json!([{"ref": [1, 2]}, {"ref": [3, 4]}]),
        &[
            ("$[0]", r#"{"ref": [1, 2]}"#),
            ("$[0].ref", "[1, 2]"),
            ("$[0].ref[0]", "1"),
            ("$.ref", "[1, 2, 3, 4]"),
            ("$count($)", "2"),
        ],
    );
    table(
        &json!({"nest0": [{"nest1": [[1, 2], [3, 4]]}]}),
        &[
            ("nest0.nest1", "[[1, 2], [3, 4]]"),
            ("nest0.nest1[0]", "[1, 2]"),
        ],
    );
}

/// <https://docs.jsonata.org/predicate>
#[test]
fn predicates_and_singletons() {
    table(
        &invoice(),
        &[
            ("Account.Order[0].OrderID", r#""order103""#),
            (
                "Account.Order.Product[Price > 30].SKU",
                r#"["0406654608", "040657863", "0406654603"]"#,
            ),
            ("Account.Order[0].Product[0].SKU", r#""0406654608""#),
            (
                "Account.Order.Product[0].SKU",
                r#"["0406654608", "040657863"]"#,
            ),
            (
                "Account.Order.Product[ProductID=345664].SKU",
                r#""0406654603""#,
            ),
            (
                "Account.Order.Product[ProductID=345664].SKU[]",
                r#"["0406654603"]"#,
            ),
            (
                "Account.Order.Product[`Product Name` = 'Cloak'].Price",
                "107.99",
            ),
            (
                "Account.Order.Product[Price > 100 or Quantity > 3].`Product Name`",
                r#"["Bowler Hat", "Cloak"]"#,
            ),
            (
                "Account.Order.Product[Price > 30 and Quantity < 2].`Product Name`",
                r#""Cloak""#,
            ),
            (
                "Account.Order.Product.Price[0]",
                "[34.45, 21.67, 34.45, 107.99]",
            ),
            ("Account.Order[OrderID='nope'].Product", "undefined"),
        ],
    );
}

/// <https://docs.jsonata.org/path-operators> (map `.`, filter `[]`, order-by `^()`, reduce `{}`)
#[test]
fn path_operators() {
    table(
        &invoice(),
        &[
            (
                "Account.Order.Product.(Price * Quantity)",
                "[68.9, 21.67, 137.8, 107.99]",
            ),
            (
                "Account.Order.OrderID.$uppercase()",
                r#"["ORDER103", "ORDER104"]"#,
            ),
            (
                "Account.Order.Product^(Price).Price",
                "[21.67, 34.45, 34.45, 107.99]",
            ),
            (
                "Account.Order.Product^(>Price).Price",
                "[107.99, 34.45, 34.45, 21.67]",
            ),
            (
                "Account.Order.Product^(>Price, <Quantity).Quantity",
                "[1, 2, 4, 1]",
            ),
            (
                "Account.Order.Product^(`Product Name`).SKU[0]",
                r#"["0406654608", "040657863", "0406654603", "0406634348"]"#,
            ),
            (
                "(Account.Order.Product^(`Product Name`).SKU)[0]",
                r#""0406654608""#,
            ),
            (
                "Account.Order.Product{`Product Name`: Price}",
                r#"{"Bowler Hat": [34.45, 34.45], "Trilby hat": 21.67, "Cloak": 107.99}"#,
            ),
            (
                "Account.Order.Product{`Product Name`: $sum(Quantity)}",
                r#"{"Bowler Hat": 6, "Trilby hat": 1, "Cloak": 1}"#,
            ),
            (
                "Account.Order{OrderID: $sum(Product.(Price * Quantity))}",
                r#"{"order103": 90.57, "order104": 245.79}"#,
            ),
            (
                "Account.Order.{'id': OrderID, 'n': $count(Product)}",
                r#"[{"id": "order103", "n": 2}, {"id": "order104", "n": 2}]"#,
            ),
            ("$sum(Account.Order.Product.(Price * Quantity))", "336.36"),
            (
                "Account.Order.Product.Description.Colour ~> $distinct()",
                r#"["Purple", "Orange", "Black"]"#,
            ),
        ],
    );
}

/// <https://docs.jsonata.org/construction>
#[test]
fn construction() {
    table(
        &address(),
        &[
            (
                "Email.address",
                r#"["fred.smith@my-work.com", "fsmith@my-work.com", "freddy@my-social.com", "frederic.smith@very-serious.com"]"#,
            ),
            (
                "Email.[address]",
                r#"[["fred.smith@my-work.com", "fsmith@my-work.com"], ["freddy@my-social.com", "frederic.smith@very-serious.com"]]"#,
            ),
            (
                "[Address, Other.`Alternative.Address`].City",
                r#"["Winchester", "London"]"#,
            ),
            (
                "Phone.{type: number}",
                r#"[{"home": "0203 544 1234"}, {"office": "01962 001234"}, {"office": "01962 001235"}, {"mobile": "077 7700 1234"}]"#,
            ),
            (
                "Phone{type: number}",
                r#"{"home": "0203 544 1234", "office": ["01962 001234", "01962 001235"], "mobile": "077 7700 1234"}"#,
            ),
            (
                "Phone{type: number[]}",
                r#"{"home": ["0203 544 1234"], "office": ["01962 001234", "01962 001235"], "mobile": ["077 7700 1234"]}"#,
            ),
            (
                "{'name': FirstName & ' ' & Surname, 'age': Age}",
                r#"{"name": "Fred Smith", "age": 28}"#,
            ),
            ("{'missing': Nothing}", "{}"),
            ("[]", "[]"),
            ("[1, [2, 3], []]", "[1, [2, 3], []]"),
            ("{}", "{}"),
        ],
    );
}

/// <https://docs.jsonata.org/expressions> and <https://docs.jsonata.org/numeric-operators>
#[test]
fn expressions_and_numeric_operators() {
    table(
        &address(),
        &[
            ("FirstName & ' ' & Surname", r#""Fred Smith""#),
            (
                "Address.(Street & ', ' & City)",
                r#""Hursley Park, Winchester""#,
            ),
            ("5&0&true", r#""50true""#),
            ("'a' & Nothing & 'b'", r#""ab""#),
            ("5 + 2", "7"),
            ("5 - 2", "3"),
            ("5 * 2", "10"),
            ("5 / 2", "2.5"),
            ("5 % 2", "1"),
            ("-5 % 2", "-1"),
            ("-(5 + 2)", "-7"),
            ("1 + 2 * 3", "7"),
            ("(1 + 2) * 3", "9"),
            ("Age + Nothing", "undefined"),
            ("0.1 + 0.2", "0.30000000000000004"),
            ("[1..5]", "[1, 2, 3, 4, 5]"),
            ("[1..3, 7..9]", "[1, 2, 3, 7, 8, 9]"),
            ("[5..1]", "[]"),
            ("[0..2].($ * 10)", "[0, 10, 20]"),
            ("$count([1..10000])", "10000"),
        ],
    );
}

/// <https://docs.jsonata.org/comparison-operators> and <https://docs.jsonata.org/boolean-operators>
#[test]
fn comparison_and_boolean_operators() {
    table(
        &address(),
        &[
            ("Age = 28", "true"),
            ("Age != 28", "false"),
            ("Age > 20", "true"),
            ("Age >= 28", "true"),
            ("Age < 28", "false"),
            ("Age <= 27", "false"),
            ("'a' < 'b'", "true"),
            ("'abc' = 'abc'", "true"),
            ("Nothing = 1", "false"),
            ("Nothing != 1", "false"),
            ("Nothing > 1", "undefined"),
            ("[1, 2] = [1, 2]", "true"),
            ("{'a': 1} = {'a': 1}", "true"),
            ("null = null", "true"),
            ("1 in [1, 2]", "true"),
            ("3 in [1, 2]", "false"),
            ("'world' in ['hello', 'world']", "true"),
            ("'hello' in 'hello'", "true"),
            (
                "Phone[type in ['home', 'mobile']].number",
                r#"["0203 544 1234", "077 7700 1234"]"#,
            ),
            ("true and false", "false"),
            ("true or false", "true"),
            ("Age > 18 and Surname = 'Smith'", "true"),
            ("Nothing or true", "true"),
            ("Nothing and true", "false"),
            ("false or Nothing.x.y", "false"),
            ("$not(Age > 30)", "true"),
        ],
    );
}

/// <https://docs.jsonata.org/other-operators> (`&`, `? :`, `?:`, `??`, `:=`, `~>`)
#[test]
fn other_operators() {
    table(
        &invoice(),
        &[
            (
                "Account.Order.Product.(Price < 50 ? 'Cheap' : 'Expensive')",
                r#"["Cheap", "Cheap", "Cheap", "Expensive"]"#,
            ),
            (
                "Account.Order[0].Product[0].Price > 100 ? 'Expensive'",
                "undefined",
            ),
            ("Account.Nothing ?: 'default'", r#""default""#),
            ("Account.`Account Name` ?: 'default'", r#""Firefly""#),
            ("0 ?: 'zero'", r#""zero""#),
            ("'' ?: 'empty'", r#""empty""#),
            ("Account.Nothing ?? 'default'", r#""default""#),
            ("0 ?? 'zero'", "0"),
            ("null ?? 'x'", "null"),
            ("false ?? true", "false"),
            (
                "Account.Order.Product.(Price * Quantity) ~> $sum()",
                "336.36",
            ),
            (
                "Account.`Account Name` ~> $uppercase() ~> $substring(0, 4)",
                r#""FIRE""#,
            ),
            ("'  hi  ' ~> $trim ~> $uppercase", r#""HI""#),
        ],
    );
}

/// <https://docs.jsonata.org/programming> (blocks, variables, functions, recursion,
/// closures, partial application, chaining)
#[test]
fn programming_constructs() {
    table(
        &invoice(),
        &[
            ("($a := 5; $b := $a * 2; $b)", "10"),
            ("($x := 1; ($x := 2); $x)", "1"),
            ("($x := 1; ($x := 2; $x))", "2"),
            ("()", "undefined"),
            ("function($x){$x * $x}(5)", "25"),
            ("λ($x){$x + 1}(1)", "2"),
            ("($f := function($l, $w, $h){$l * $w * $h}; $f(10, 10, 5))", "500"),
            ("($factorial := function($x){ $x <= 1 ? 1 : $x * $factorial($x - 1) }; $factorial(4))", "24"),
            ("($fib := function($n){ $n <= 1 ? $n : $fib($n - 1) + $fib($n - 2) }; [1..10].$fib($))", "[1, 1, 2, 3, 5, 8, 13, 21, 34, 55]"),
            ("($add := function($x){ function($y){ $x + $y } }; $add5 := $add(5); $add5(3))", "8"),
            ("($counter := function($n){ ($n := $n + 1; $n) }; [$counter(1), $counter(10)])", "[2, 11]"),
            ("($first5 := $substring(?, 0, 5); $first5('Hello World'))", r#""Hello""#),
            ("($pow2 := $power(2, ?); [1..4].$pow2($))", "[2, 4, 8, 16]"),
            ("($f := $uppercase ~> $trim; $f('  abc  '))", r#""ABC""#),
            (
                "($domain := $substringAfter(?, '@') ~> $substringBefore(?, '.'); $domain('john@example.com'))",
                r#""example""#,
            ),
            ("($f := function($x)<n:n>{ $x * 2 }; $f(21))", "42"),
            (
                "($nth_price := function($n) { (Account.Order.Product.Price)[$n] }; $nth_price(1))",
                "21.67",
            ),
            ("$map([1, 2, 3], function($v, $i){ $v * $i })", "[0, 2, 6]"),
            ("/* a comment */ 1 + /* another */ 2", "3"),
        ],
    );
}

/// <https://docs.jsonata.org/regex>
#[test]
fn regular_expressions() {
    table(
        &address(),
        &[
            ("Phone[$contains(number, /^077/)].type", r#""mobile""#),
            ("$match('ababbabbcc', /a(b+)/)", r#"[{"match": "ab", "index": 0, "groups": ["b"]}, {"match": "abb", "index": 2, "groups": ["bb"]}, {"match": "abb", "index": 5, "groups": ["bb"]}]"#),
            ("$match('ababbabbcc', /a(b+)/, 1)", r#"{"match": "ab", "index": 0, "groups": ["b"]}"#),
            ("$contains('Hello World', /wo/)", "false"),
            ("$contains('Hello World', /wo/i)", "true"),
            ("$split('too much, punctuation. hard; to read', /[ ,.;]+/)", r#"["too", "much", "punctuation", "hard", "to", "read"]"#),
            ("$replace('abracadabra', /a.*?a/, '*')", r#""*c*bra""#),
            ("$replace('John Smith', /(\\w+)\\s(\\w+)/, '$2, $1')", r#""Smith, John""#),
            ("$replace('265USD', /([0-9]+)USD/, '$$$1')", r#""$265""#),
            ("$replace('temperature = 68F today', /(\\d+)F/, function($m) { $formatNumber(($number($m.groups[0]) - 32) * 5/9, '0.0') & 'C' })", r#""temperature = 20.0C today""#),
            ("/^a/('abc').match", r#""a""#),
            ("Email[$join(address, ',') ~> $contains(/serious/)].type", r#""home""#),
        ],
    );
}

/// <https://docs.jsonata.org/string-functions>
#[test]
fn string_functions() {
    table(
        &address(),
        &[
            ("$string(5)", r#""5""#),
            ("$string('x')", r#""x""#),
            ("$string(true)", r#""true""#),
            ("$string(null)", r#""null""#),
            (
                "$string([1, 'a', {'b': 1.5}])",
                r#""[1,\"a\",{\"b\":1.5}]""#,
            ),
            ("$string({'a': 1}, true)", r#""{\n  \"a\": 1\n}""#),
            ("$string(1e21)", r#""1e+21""#),
            ("$string(1/3)", r#""0.333333333333333""#),
            ("$string(0.0000001)", r#""1e-7""#),
            ("$string(123456789012)", r#""123456789012""#),
            ("$string(function(){1})", r#""""#),
            ("$length('Hello World')", "11"),
            ("$length('𝄞')", "1"),
            ("$substring('Hello World', 3)", r#""lo World""#),
            ("$substring('Hello World', 3, 5)", r#""lo Wo""#),
            ("$substring('Hello World', -4)", r#""orld""#),
            ("$substring('Hello World', -4, 2)", r#""or""#),
            ("$substringBefore('Hello World', ' ')", r#""Hello""#),
            ("$substringAfter('Hello World', ' ')", r#""World""#),
            ("$substringAfter('Hello World', 'x')", r#""Hello World""#),
            ("$uppercase('Hello World')", r#""HELLO WORLD""#),
            ("$lowercase('Hello World')", r#""hello world""#),
            ("$trim('   Hello  \n World  ')", r#""Hello World""#),
            ("$pad('foo', 5)", r#""foo  ""#),
            ("$pad('foo', -5)", r#""  foo""#),
            ("$pad('foo', -5, '#')", "\"##foo\""),
            ("$formatBase(35, 2) ~> $pad(-8, '0')", r#""00100011""#),
            ("$contains('abracadabra', 'bra')", "true"),
            ("$contains('abracadabra', /a.*a/)", "true"),
            ("$contains('abracadabra', /ar.*a/)", "false"),
            ("$split('so many words', ' ')", r#"["so", "many", "words"]"#),
            ("$split('so many words', ' ', 2)", r#"["so", "many"]"#),
            ("$split('abc', '')", r#"["a", "b", "c"]"#),
            ("$join(['a', 'b', 'c'])", r#""abc""#),
            ("$join(['a', 'b', 'c'], ', ')", r#""a, b, c""#),
            (
                "$split('too much, punctuation. hard; to read', /[ ,.;]+/, 3) ~> $join(', ')",
                r#""too, much, punctuation""#,
            ),
            (
                "$replace('John Smith and John Jones', 'John', 'Mr')",
                r#""Mr Smith and Mr Jones""#,
            ),
            (
                "$replace('John Smith and John Jones', 'John', 'Mr', 1)",
                r#""Mr Smith and John Jones""#,
            ),
            (
                "$base64encode('myuser:mypass')",
                r#""bXl1c2VyOm15cGFzcw==""#,
            ),
            (
                "$base64decode('bXl1c2VyOm15cGFzcw==')",
                r#""myuser:mypass""#,
            ),
            ("$encodeUrlComponent('?x=test')", r#""%3Fx%3Dtest""#),
            (
                "$encodeUrl('https://mozilla.org/?x=шеллы')",
                r#""https://mozilla.org/?x=%D1%88%D0%B5%D0%BB%D0%BB%D1%8B""#,
            ),
            ("$decodeUrlComponent('%3Fx%3Dtest')", r#""?x=test""#),
            (
                "$decodeUrl('https://mozilla.org/?x=%D1%88%D0%B5%D0%BB%D0%BB%D1%8B')",
                r#""https://mozilla.org/?x=шеллы""#,
            ),
            ("$eval('[1,2,3]')", "[1, 2, 3]"),
            ("$eval('$sum($)', [1, 2, 3])", "6"),
            ("$eval('Age + 1')", "29"),
            ("Surname.$uppercase()", r#""SMITH""#),
            ("Phone.type.$substring(0, 1)", r#"["h", "o", "o", "m"]"#),
        ],
    );
}

/// <https://docs.jsonata.org/numeric-functions>
#[test]
fn numeric_functions() {
    table(
        &json!(null),
        &[
            ("$number('5')", "5"),
            ("$number('-0.05')", "-0.05"),
            ("$number('1e3')", "1000"),
            ("$number('0x12')", "18"),
            ("$number(true)", "1"),
            ("$number(5)", "5"),
            ("$abs(5)", "5"),
            ("$abs(-5)", "5"),
            ("$floor(5)", "5"),
            ("$floor(5.3)", "5"),
            ("$floor(5.8)", "5"),
            ("$floor(-5.3)", "-6"),
            ("$ceil(5)", "5"),
            ("$ceil(5.3)", "6"),
            ("$ceil(-5.3)", "-5"),
            ("$round(123.456)", "123"),
            ("$round(123.456, 2)", "123.46"),
            ("$round(123.456, -1)", "120"),
            ("$round(123.456, -2)", "100"),
            ("$round(11.5)", "12"),
            ("$round(12.5)", "12"),
            ("$round(125, -1)", "120"),
            ("$round(-2.5)", "-2"),
            ("$round(2.675, 2)", "2.68"),
            ("$power(2, 8)", "256"),
            ("$power(2, 0.5)", "1.4142135623730951"),
            ("$power(2, -2)", "0.25"),
            ("$sqrt(4)", "2"),
            ("$sqrt(2)", "1.4142135623730951"),
            ("$random() >= 0 and $random() < 1", "true"),
            ("$formatNumber(12345.6, '#,###.00')", r#""12,345.60""#),
            ("$formatNumber(1234567.891, '#,##0.0')", r#""1,234,567.9""#),
            ("$formatNumber(34.555, '#0.00;(#0.00)')", r#""34.56""#),
            ("$formatNumber(-34.555, '#0.00;(#0.00)')", r#""(34.56)""#),
            ("$formatNumber(0.14, '01%')", r#""14%""#),
            ("$formatNumber(-6, '000')", r#""-006""#),
            ("$formatNumber(5, '$#,##0.00')", r#""$5.00""#),
            ("$formatBase(100, 2)", r#""1100100""#),
            ("$formatBase(2555, 16)", r#""9fb""#),
            ("$formatBase(-255, 16)", r#""-ff""#),
            ("$formatInteger(1234, '#,##0')", r#""1,234""#),
            ("$formatInteger(7, '000')", r#""007""#),
            ("$parseInteger('1,234', '#,##0')", "1234"),
        ],
    );
}

/// <https://docs.jsonata.org/aggregation-functions>
#[test]
fn aggregation_functions() {
    table(
        &invoice(),
        &[
            ("$sum([5, 1, 3, 7, 4])", "20"),
            ("$sum([])", "0"),
            ("$sum(Account.Order.Product.Quantity)", "8"),
            ("$max([5, 1, 3, 7, 4])", "7"),
            ("$min([5, 1, 3, 7, 4])", "1"),
            ("$average([5, 1, 3, 7, 4])", "4"),
            ("$max([])", "undefined"),
            ("$average(Nothing)", "undefined"),
            ("$sum(5)", "5"),
        ],
    );
}

/// <https://docs.jsonata.org/boolean-functions>
#[test]
fn boolean_functions() {
    table(
        &address(),
        &[
            ("$boolean('')", "false"),
            ("$boolean('0')", "true"),
            ("$boolean(0)", "false"),
            ("$boolean(-1)", "true"),
            ("$boolean(null)", "false"),
            ("$boolean([])", "false"),
            ("$boolean([0, false])", "false"),
            ("$boolean([0, 1])", "true"),
            ("$boolean({})", "false"),
            ("$boolean({'a': 1})", "true"),
            ("$boolean(function(){1})", "false"),
            ("$boolean(Nothing)", "undefined"),
            ("$not(true)", "false"),
            ("$not('')", "true"),
            ("$exists(Surname)", "true"),
            ("$exists(Other.Misc)", "true"),
            ("$exists(Other.Nothing)", "false"),
        ],
    );
}

/// <https://docs.jsonata.org/array-functions>
#[test]
fn array_functions() {
    table(
        &invoice(),
        &[
            ("$count([1, 2, 3, 1])", "4"),
            ("$count('hello')", "1"),
            ("$count([])", "0"),
            ("$count(Nothing)", "0"),
            ("$count(Account.Order.Product)", "4"),
            ("$append([1, 2, 3], [4, 5, 6])", "[1, 2, 3, 4, 5, 6]"),
            ("$append([1, 2, 3], 4)", "[1, 2, 3, 4]"),
            ("$append('Hello', 'World')", r#"["Hello", "World"]"#),
            ("$append(Nothing, [1])", "[1]"),
            ("$sort([3, 1, 2])", "[1, 2, 3]"),
            ("$sort(['b', 'c', 'a'])", r#"["a", "b", "c"]"#),
            (
                "$sort(Account.Order.Product, function($l, $r) { $l.Description.Weight > $r.Description.Weight }).SKU",
                r#"["0406634348", "0406654608", "040657863", "0406654603"]"#,
            ),
            ("$sort([{'a': 2}, {'a': 1}], function($l, $r){ $l.a > $r.a }).a", "[1, 2]"),
            ("$reverse(['Hello', 'World'])", r#"["World", "Hello"]"#),
            ("[1..5] ~> $reverse()", "[5, 4, 3, 2, 1]"),
            ("$count($shuffle([1..10]))", "10"),
            ("$sum($shuffle([1..10]))", "55"),
            ("$distinct([1, 2, 3, 3, 4, 3, 5])", "[1, 2, 3, 4, 5]"),
            ("$distinct(Account.Order.Product.Description.Colour)", r#"["Purple", "Orange", "Black"]"#),
            ("$distinct([{'a': 1}, {'a': 1}])", r#"[{"a": 1}]"#),
            ("$zip([1, 2, 3], [4, 5, 6])", "[[1, 4], [2, 5], [3, 6]]"),
            ("$zip([1, 2, 3], [4, 5], [7, 8, 9])", "[[1, 4, 7], [2, 5, 8]]"),
        ],
    );
}

/// <https://docs.jsonata.org/object-functions>
#[test]
fn object_functions() {
    table(
        &address(),
        &[
            ("$keys({'a': 1, 'b': 2})", r#"["a", "b"]"#),
            ("$keys({'a': 1})", r#""a""#),
            ("$count($keys(Phone))", "2"),
            ("$lookup(Address, 'City')", r#""Winchester""#),
            (
                "$lookup(Phone, 'type')",
                r#"["home", "office", "office", "mobile"]"#,
            ),
            ("$spread({'a': 1, 'b': 2})", r#"[{"a": 1}, {"b": 2}]"#),
            (
                "$merge([{'a': 1}, {'b': 2}, {'a': 3}])",
                r#"{"a": 3, "b": 2}"#,
            ),
            (
                "$each({'a': 1, 'b': 2}, function($v, $k){ $k & '=' & $v })",
                r#"["a=1", "b=2"]"#,
            ),
            (
                "$sift({'a': 1, 'b': 2, 'c': 3}, function($v){ $v > 1 })",
                r#"{"b": 2, "c": 3}"#,
            ),
            ("$sift({'a': 1}, function($v){ $v > 1 })", "undefined"),
            (
                "$sift(Address, function($v, $k){ $k ~> /^S/ })",
                r#"{"Street": "Hursley Park"}"#,
            ),
            ("$type('a')", r#""string""#),
            ("$type(1)", r#""number""#),
            ("$type(true)", r#""boolean""#),
            ("$type(null)", r#""null""#),
            ("$type([])", r#""array""#),
            ("$type({})", r#""object""#),
            ("$type($type)", r#""function""#),
            ("$type(Nothing)", "undefined"),
            ("$assert(Age > 18, 'adult')", "undefined"),
        ],
    );
    error_table(
        &address(),
        &[
            ("$error('boom')", "D3137"),
            ("$error()", "D3137"),
            ("$assert(Age < 18, 'minor')", "D3141"),
            ("$assert(1)", "T0410"),
        ],
    );
}

/// <https://docs.jsonata.org/higher-order-functions>
#[test]
fn higher_order_functions() {
    table(
        &invoice(),
        &[
            ("$map([1..5], $string)", r#"["1", "2", "3", "4", "5"]"#),
            (
                "$map(['a', 'b'], function($v, $i, $a) { 'Item ' & ($i + 1) & ' of ' & $count($a) & ': ' & $v })",
                r#"["Item 1 of 2: a", "Item 2 of 2: b"]"#,
            ),
            ("$map([1, 2], function($v){ $v > 1 ? $v })", "2"),
            ("$map(Nothing, $string)", "undefined"),
            (
                "$filter(Account.Order.Product, function($v, $i, $a) { $v.Price > $average($a.Price) }).SKU",
                r#""0406654603""#,
            ),
            ("$filter([1, 2, 3, 4], function($v){ $v % 2 = 0 })", "[2, 4]"),
            ("$single(Account.Order.Product, function($v){ $v.Quantity = 4 }).SKU", r#""040657863""#),
            ("$single([7])", "7"),
            ("$reduce([1..5], function($i, $j){ $i * $j })", "120"),
            ("$reduce([1..5], function($i, $j){ $i + $j }, 100)", "115"),
            ("$reduce([], function($i, $j){ $i + $j })", "undefined"),
            ("$reduce([1, 2, 3], function($acc, $v, $i){ $acc + $v * $i }, 0)", "8"),
            ("$reduce(Account.Order.Product.Quantity, function($a, $b){ $a + $b })", "8"),
        ],
    );
    error_table(
        &invoice(),
        &[
            ("$single([1, 2])", "D3138"),
            ("$single([1, 2], function($v){ $v > 5 })", "D3139"),
            ("$reduce([1, 2], function($a){ $a })", "D3050"),
        ],
    );
}

/// <https://docs.jsonata.org/date-time-functions>
#[test]
fn date_time_functions() {
    table(
        &json!(null),
        &[
            (
                "$fromMillis(1510067557121)",
                r#""2017-11-07T15:12:37.121Z""#,
            ),
            (
                "$fromMillis(1510067557121, '[M01]/[D01]/[Y0001] [h#1]:[m01][P]')",
                r#""11/07/2017 3:12pm""#,
            ),
            (
                "$fromMillis(1510067557121, '[H01]:[m01]:[s01] [z]', '-0500')",
                r#""10:12:37 GMT-05:00""#,
            ),
            (
                "$fromMillis(1510067557121, '[Y0001]-[M01]-[D01]T[H01]:[m01]:[s01][Z]', '+0100')",
                r#""2017-11-07T16:12:37+01:00""#,
            ),
            (
                "$fromMillis(1521801216617, '[FNn], [D] [MNn] [Y]')",
                r#""Friday, 23 March 2018""#,
            ),
            (
                "$fromMillis(1521801216617, '[MNn,3-3] [Y,2]')",
                r#""Mar 18""#,
            ),
            ("$toMillis('2017-11-07T15:07:54.972Z')", "1510067274972"),
            ("$toMillis('2017-11-07T15:07:54+01:00')", "1510063674000"),
            ("$toMillis('2017-11-07')", "1510012800000"),
            ("$toMillis('2018')", "1514764800000"),
            (
                "$toMillis('2018-03-27', '[Y0001]-[M01]-[D01]')",
                "1522108800000",
            ),
            (
                "$toMillis('4/4/2018 11:30 pm', '[D1]/[M1]/[Y0001] [h]:[m] [P]')",
                "1522884600000",
            ),
            (
                "$toMillis('21 August 2017', '[D1] [MNn] [Y0001]')",
                "1503273600000",
            ),
            (
                "$toMillis('27th 3 1976', '[D1o] [M#1] [Y0001]')",
                "196732800000",
            ),
            ("$toMillis('2018-094', '[Y0001]-[d001]')", "1522800000000"),
            (
                "$toMillis('10:00 +01:00 2020-01-02', '[H01]:[m01] [Z] [Y]-[M]-[D]')",
                "1577955600000",
            ),
            ("$toMillis('nothing like it', '[Y]-[M]-[D]')", "undefined"),
            ("$toMillis($fromMillis(1510067557121))", "1510067557121"),
            ("$millis() > 1500000000000", "true"),
            ("$toMillis($now()) = $millis()", "true"),
            ("$now() = $now()", "true"),
        ],
    );
    error_table(
        &json!(null),
        &[
            ("$toMillis('not a date')", "D3110"),
            ("$fromMillis(0, '[Q]')", "D3132"),
        ],
    );
}

/// <https://docs.jsonata.org/other-operators#-transform> style transforms.
#[test]
fn transforms() {
    table(
        &json!({"a": {"b": 1, "c": 2}, "list": [{"x": 1}, {"x": 2}]}),
        &[
            (
                "$ ~> |a|{'b': 10}|",
                r#"{"a": {"b": 10, "c": 2}, "list": [{"x": 1}, {"x": 2}]}"#,
            ),
            (
                "$ ~> |a|{}, ['c']|",
                r#"{"a": {"b": 1}, "list": [{"x": 1}, {"x": 2}]}"#,
            ),
            (
                "$ ~> |list|{'y': x * 10}|",
                r#"{"a": {"b": 1, "c": 2}, "list": [{"x": 1, "y": 10}, {"x": 2, "y": 20}]}"#,
            ),
            ("($t := |a|{'b': 0}|; $t($).a.b)", "0"),
            ("a", r#"{"b": 1, "c": 2}"#),
        ],
    );
    error_table(
        &json!({"a": {"b": 1}}),
        &[("$ ~> |a|5|", "T2011"), ("$ ~> |a|{}, 5|", "T2012")],
    );
}

/// <https://docs.jsonata.org/path-operators#-positional-variable-binding> and
/// <https://docs.jsonata.org/path-operators#-context-variable-binding>
#[test]
fn positional_and_context_binding() {
    let library = json!({"library": {
        "books": [
            {"title": "Structure and Interpretation of Computer Programs", "authors": ["Abelson", "Sussman"], "isbn": "9780262510875"},
            {"title": "The C Programming Language", "authors": ["Kernighan", "Richie"], "isbn": "9780131103627"},
            {"title": "The AWK Programming Language", "authors": ["Aho", "Kernighan", "Weinberger"], "isbn": "9780201079814"}
        ],
        "loans": [
            {"customer": "10001", "isbn": "9780262510875"},
            {"customer": "10003", "isbn": "9780201079814"},
            {"customer": "10003", "isbn": "9780131103627"}
        ],
        "customers": [
            {"id": "10001", "name": "Joe Doe"},
            {"id": "10002", "name": "Fred Bloggs"},
            {"id": "10003", "name": "Jason Arthur"}
        ]
    }});
    table(
        &library,
        &[
            (
                "library.books#$i['Kernighan' in authors].{'title': title, 'index': $i}",
                r#"[{"title": "The C Programming Language", "index": 1}, {"title": "The AWK Programming Language", "index": 2}]"#,
            ),
            ("library.books[[0..1]]#$i.$i", "[0, 1]"),
            ("library.books#$i[$i < 2].isbn", r#"["9780262510875", "9780131103627"]"#),
            (
                "library.loans@$l.books@$b[$l.isbn=$b.isbn].{'title': $b.title, 'customer': $l.customer}",
                r#"[{"title": "Structure and Interpretation of Computer Programs", "customer": "10001"},
                    {"title": "The AWK Programming Language", "customer": "10003"},
                    {"title": "The C Programming Language", "customer": "10003"}]"#,
            ),
            (
                "(library.loans)@$l.(library.customers)@$c[$l.customer=$c.id].{'customer': $c.name, 'isbn': $l.isbn}",
                r#"[{"customer": "Joe Doe", "isbn": "9780262510875"},
                    {"customer": "Jason Arthur", "isbn": "9780201079814"},
                    {"customer": "Jason Arthur", "isbn": "9780131103627"}]"#,
            ),
            (
                "library.loans@$l.customers@$c[$l.customer=$c.id]{$c.name: $count($l)}",
                r#"{"Joe Doe": 1, "Jason Arthur": 2}"#,
            ),
            ("library.books^(title)#$i.{'t': title, 'i': $i}[0]", r#"{"t": "Structure and Interpretation of Computer Programs", "i": 0}"#),
        ],
    );
}

/// <https://docs.jsonata.org/path-operators#-parent>
#[test]
fn parent_operator() {
    table(
        &invoice(),
        &[
            (
                "Account.Order.Product.{'Product': `Product Name`, 'Order': %.OrderID, 'Account': %.%.`Account Name`}",
                r#"[{"Product": "Bowler Hat", "Order": "order103", "Account": "Firefly"},
                    {"Product": "Trilby hat", "Order": "order103", "Account": "Firefly"},
                    {"Product": "Bowler Hat", "Order": "order104", "Account": "Firefly"},
                    {"Product": "Cloak", "Order": "order104", "Account": "Firefly"}]"#,
            ),
            ("Account.Order.Product[%.OrderID = 'order104'].SKU", r#"["040657863", "0406654603"]"#),
            ("(Account.Order.Product)[%.OrderID = 'order104'].SKU", r#"["040657863", "0406654603"]"#),
            ("Account.Order.Product.Description.%.%.OrderID", r#"["order103", "order103", "order104", "order104"]"#),
            ("Account.Order.Product^(%.OrderID, Price).SKU", r#"["0406634348", "0406654608", "040657863", "0406654603"]"#),
        ],
    );
}
