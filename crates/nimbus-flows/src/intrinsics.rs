//! Intrinsic functions (`States.Format(...)` and friends) for JSONPath states: a parser
//! that checks names, arity and nesting at validation time, and an evaluator.
//!
//! Source: <https://docs.aws.amazon.com/step-functions/latest/dg/intrinsic-functions.html>.

use base64::Engine as _;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Number, Value};

use crate::errors::{names, Error, Result};
use crate::path::Path;

/// Most intrinsic calls one field may nest.
pub const MAX_NESTING: usize = 10;
/// Most items `States.ArrayRange` may produce.
pub const MAX_RANGE_ITEMS: usize = 1000;
/// Longest input `States.Base64Encode`, `Base64Decode` and `Hash` accept, in characters.
pub const MAX_ENCODE_INPUT: usize = 10_000;

/// The intrinsic functions, with their arity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `States.Format(template, args…)`.
    Format,
    /// `States.StringToJson(string)`.
    StringToJson,
    /// `States.JsonToString(value)`.
    JsonToString,
    /// `States.Array(values…)`.
    Array,
    /// `States.ArrayPartition(array, size)`.
    ArrayPartition,
    /// `States.ArrayContains(array, value)`.
    ArrayContains,
    /// `States.ArrayRange(first, last, step)`.
    ArrayRange,
    /// `States.ArrayGetItem(array, index)`.
    ArrayGetItem,
    /// `States.ArrayLength(array)`.
    ArrayLength,
    /// `States.ArrayUnique(array)`.
    ArrayUnique,
    /// `States.Base64Encode(string)`.
    Base64Encode,
    /// `States.Base64Decode(string)`.
    Base64Decode,
    /// `States.Hash(data, algorithm)`.
    Hash,
    /// `States.JsonMerge(a, b, deep)` (shallow only).
    JsonMerge,
    /// `States.MathRandom(start, end[, seed])`.
    MathRandom,
    /// `States.MathAdd(a, b)`.
    MathAdd,
    /// `States.StringSplit(string, delimiters)`.
    StringSplit,
    /// `States.UUID()`.
    Uuid,
}

impl Function {
    /// Looks a function up by its full name (`States.Format`).
    pub fn from_name(name: &str) -> Option<Self> {
        use Function::*;
        Some(match name {
            "States.Format" => Format,
            "States.StringToJson" => StringToJson,
            "States.JsonToString" => JsonToString,
            "States.Array" => Array,
            "States.ArrayPartition" => ArrayPartition,
            "States.ArrayContains" => ArrayContains,
            "States.ArrayRange" => ArrayRange,
            "States.ArrayGetItem" => ArrayGetItem,
            "States.ArrayLength" => ArrayLength,
            "States.ArrayUnique" => ArrayUnique,
            "States.Base64Encode" => Base64Encode,
            "States.Base64Decode" => Base64Decode,
            "States.Hash" => Hash,
            "States.JsonMerge" => JsonMerge,
            "States.MathRandom" => MathRandom,
            "States.MathAdd" => MathAdd,
            "States.StringSplit" => StringSplit,
            "States.UUID" => Uuid,
            _ => return None,
        })
    }

    /// The function's full name.
    pub fn name(self) -> &'static str {
        use Function::*;
        match self {
            Format => "States.Format",
            StringToJson => "States.StringToJson",
            JsonToString => "States.JsonToString",
            Array => "States.Array",
            ArrayPartition => "States.ArrayPartition",
            ArrayContains => "States.ArrayContains",
            ArrayRange => "States.ArrayRange",
            ArrayGetItem => "States.ArrayGetItem",
            ArrayLength => "States.ArrayLength",
            ArrayUnique => "States.ArrayUnique",
            Base64Encode => "States.Base64Encode",
            Base64Decode => "States.Base64Decode",
            Hash => "States.Hash",
            JsonMerge => "States.JsonMerge",
            MathRandom => "States.MathRandom",
            MathAdd => "States.MathAdd",
            StringSplit => "States.StringSplit",
            Uuid => "States.UUID",
        }
    }

    /// The allowed number of arguments, inclusive (`None` as maximum: unbounded).
    pub fn arity(self) -> (usize, Option<usize>) {
        use Function::*;
        match self {
            Format => (1, None),
            Array => (0, None),
            StringToJson | JsonToString | ArrayLength | ArrayUnique | Base64Encode
            | Base64Decode => (1, Some(1)),
            ArrayPartition | ArrayContains | ArrayGetItem | Hash | MathAdd | StringSplit => {
                (2, Some(2))
            }
            ArrayRange | JsonMerge => (3, Some(3)),
            MathRandom => (2, Some(3)),
            Uuid => (0, Some(0)),
        }
    }
}

/// One argument of an intrinsic call.
#[derive(Debug, Clone)]
pub enum Arg {
    /// A literal: string (`'…'`), number, `true`/`false` or `null`.
    Literal(Value),
    /// A path into the input (`$.x`) or the context object (`$$.x`).
    Path(Path),
    /// A nested call.
    Call(Call),
}

/// A parsed intrinsic function call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The function.
    pub function: Function,
    /// Its arguments, in order (string literals unescaped).
    pub args: Vec<Arg>,
    /// For `States.Format` with a literal template: the template with its `\{`, `\}` and
    /// `\\` escapes kept, so escaped braces are not taken for placeholders.
    pub template: Option<String>,
}

/// Whether a `.$` value looks like an intrinsic call rather than a path.
pub fn looks_like_call(text: &str) -> bool {
    text.trim_start().starts_with("States.")
}

impl Call {
    /// Parses `States.Name(arg, …)`, checking names, arity and nesting depth.
    pub fn parse(text: &str) -> Result<Self> {
        let mut p = Parser {
            text,
            chars: text.char_indices().collect(),
            pos: 0,
        };
        let call = p.call(1)?;
        p.skip_ws();
        if p.pos != p.chars.len() {
            return Err(p.err("unexpected text after the closing parenthesis"));
        }
        Ok(call)
    }

    /// Evaluates the call against the state input and the context object; `rng` feeds
    /// `States.MathRandom` without a seed and `States.UUID`.
    pub fn eval(&self, input: &Value, context: &Value, rng: &mut dyn RngCore) -> Result<Value> {
        let mut args = Vec::with_capacity(self.args.len());
        for a in &self.args {
            args.push(match a {
                Arg::Literal(v) => v.clone(),
                Arg::Path(p) => p.select(input, context).ok_or_else(|| {
                    fail(format!(
                        "The JsonPath argument for the field '{}' could not be found in the input",
                        p.as_str()
                    ))
                })?,
                Arg::Call(c) => c.eval(input, context, rng)?,
            });
        }
        if let Some(t) = &self.template {
            args[0] = Value::String(t.clone());
        } else if self.function == Function::Format {
            // A template read from a path has no escapes: protect its backslashes.
            if let Some(Value::String(t)) = args.first() {
                args[0] = Value::String(t.replace('\\', "\\\\"));
            }
        }
        apply(self.function, args, rng)
    }
}

fn fail(cause: impl Into<String>) -> Error {
    Error::states(names::INTRINSIC_FAILURE, cause)
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &str) -> Error {
        Error::IntrinsicSyntax {
            text: self.text.to_string(),
            reason: format!("{reason} (at character {})", self.pos),
        }
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|c| c.1)
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn byte(&self, pos: usize) -> usize {
        self.chars.get(pos).map_or(self.text.len(), |c| c.0)
    }

    fn call(&mut self, depth: usize) -> Result<Call> {
        if depth > MAX_NESTING {
            return Err(self.err(&format!(
                "intrinsic functions may nest at most {MAX_NESTING} deep"
            )));
        }
        self.skip_ws();
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            self.pos += 1;
        }
        let name = &self.text[self.byte(start)..self.byte(self.pos)];
        let function = Function::from_name(name)
            .ok_or_else(|| self.err(&format!("unknown intrinsic function '{name}'")))?;
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.err("expected '('"));
        }
        self.pos += 1;
        let mut args = Vec::new();
        let mut template = None;
        self.skip_ws();
        if function == Function::Format && self.peek() == Some('\'') {
            let (text, raw) = self.string()?;
            args.push(Arg::Literal(Value::String(text)));
            template = Some(raw);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {}
                _ => return Err(self.err("expected ',' or ')'")),
            }
            self.skip_ws();
        }
        if self.peek() == Some(')') {
            self.pos += 1;
        } else {
            loop {
                args.push(self.arg(depth)?);
                self.skip_ws();
                match self.peek() {
                    Some(',') => self.pos += 1,
                    Some(')') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.err("expected ',' or ')'")),
                }
            }
        }
        let (min, max) = function.arity();
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            let want = match max {
                Some(m) if m == min => format!("{min}"),
                Some(m) => format!("{min} to {m}"),
                None => format!("at least {min}"),
            };
            return Err(self.err(&format!(
                "{} takes {want} argument(s), got {}",
                function.name(),
                args.len()
            )));
        }
        Ok(Call {
            function,
            args,
            template,
        })
    }

    fn arg(&mut self, depth: usize) -> Result<Arg> {
        self.skip_ws();
        match self.peek() {
            Some('\'') => self.string().map(|(s, _)| Arg::Literal(Value::String(s))),
            Some('$') => self.path(),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some('S') => self.call(depth + 1).map(Arg::Call),
            Some(_) => {
                for (word, v) in [
                    ("true", Value::Bool(true)),
                    ("false", Value::Bool(false)),
                    ("null", Value::Null),
                ] {
                    if self.text[self.byte(self.pos)..].starts_with(word) {
                        self.pos += word.len();
                        return Ok(Arg::Literal(v));
                    }
                }
                Err(self
                    .err("expected a string, number, boolean, null, path or intrinsic function"))
            }
            None => Err(self.err("unexpected end of text")),
        }
    }

    /// A quoted literal: (unescaped, with `\{`, `\}`, `\\` escapes kept).
    fn string(&mut self) -> Result<(String, String)> {
        self.pos += 1;
        let mut out = String::new();
        let mut raw = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string literal")),
                Some('\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c @ ('\'' | '{' | '}' | '\\')) => {
                            if c != '\'' {
                                raw.push('\\');
                            }
                            raw.push(c);
                            out.push(c);
                            self.pos += 1;
                        }
                        _ => return Err(self.err("only \\', \\{, \\} and \\\\ may be escaped")),
                    }
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok((out, raw));
                }
                Some(c) => {
                    out.push(c);
                    raw.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Arg> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        {
            self.pos += 1;
        }
        let text = &self.text[self.byte(start)..self.byte(self.pos)];
        let n: Number =
            serde_json::from_str(text).map_err(|_| self.err(&format!("bad number '{text}'")))?;
        Ok(Arg::Literal(Value::Number(n)))
    }

    fn path(&mut self) -> Result<Arg> {
        let start = self.pos;
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        while let Some(c) = self.peek() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '\'' | '"' => quote = Some(c),
                    '[' | '(' => depth += 1,
                    ']' | ')' if depth > 0 => depth -= 1,
                    ',' | ')' if depth == 0 => break,
                    _ => {}
                },
            }
            self.pos += 1;
        }
        let text = self.text[self.byte(start)..self.byte(self.pos)].trim();
        Path::parse(text)
            .map(Arg::Path)
            .map_err(|e| self.err(&e.to_string()))
    }
}

fn as_str(f: Function, i: usize, v: &Value) -> Result<&str> {
    v.as_str().ok_or_else(|| {
        fail(format!(
            "The argument {} of {} must be a string, got {}",
            i + 1,
            f.name(),
            v
        ))
    })
}
fn as_array(f: Function, i: usize, v: &Value) -> Result<&Vec<Value>> {
    v.as_array().ok_or_else(|| {
        fail(format!(
            "The argument {} of {} must be an array, got {}",
            i + 1,
            f.name(),
            v
        ))
    })
}
fn as_int(f: Function, i: usize, v: &Value) -> Result<i64> {
    let n = v.as_number().ok_or_else(|| {
        fail(format!(
            "The argument {} of {} must be a number, got {}",
            i + 1,
            f.name(),
            v
        ))
    })?;
    if let Some(n) = n.as_i64() {
        return Ok(n);
    }
    match n.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Ok(x as i64),
        _ => Err(fail(format!(
            "The argument {} of {} must be an integer, got {}",
            i + 1,
            f.name(),
            v
        ))),
    }
}
fn string_arg(f: Function, i: usize, v: &Value) -> Result<String> {
    as_str(f, i, v).map(str::to_string)
}

/// Applies the intrinsic named `name` (e.g. `States.ArrayPartition`) to evaluated
/// arguments; the JSONata functions Step Functions adds reuse these.
pub(crate) fn apply_named(name: &str, args: Vec<Value>, rng: &mut dyn RngCore) -> Result<Value> {
    let f = Function::from_name(name)
        .ok_or_else(|| fail(format!("Unknown intrinsic function '{name}'")))?;
    apply(f, args, rng)
}

fn apply(f: Function, args: Vec<Value>, rng: &mut dyn RngCore) -> Result<Value> {
    use Function::*;
    Ok(match f {
        Format => {
            let template = as_str(f, 0, &args[0])?;
            let mut out = String::new();
            let mut rest = args[1..].iter();
            let mut chars = template.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    }
                    '{' if chars.peek() == Some(&'}') => {
                        chars.next();
                        let v = rest.next().ok_or_else(|| {
                            fail("Number of arguments in States.Format does not match the number of '{}' placeholders")
                        })?;
                        match v {
                            Value::String(s) => out.push_str(s),
                            other => out.push_str(&other.to_string()),
                        }
                    }
                    c => out.push(c),
                }
            }
            if rest.next().is_some() {
                return Err(fail("Number of arguments in States.Format does not match the number of '{}' placeholders"));
            }
            Value::String(out)
        }
        StringToJson => {
            let s = string_arg(f, 0, &args[0])?;
            serde_json::from_str(&s)
                .map_err(|e| fail(format!("States.StringToJson could not parse {s:?}: {e}")))?
        }
        JsonToString => Value::String(args[0].to_string()),
        Array => Value::Array(args),
        ArrayPartition => {
            let a = as_array(f, 0, &args[0])?;
            let size = as_int(f, 1, &args[1])?;
            if size <= 0 {
                return Err(fail(
                    "The chunk size of States.ArrayPartition must be greater than 0",
                ));
            }
            Value::Array(
                a.chunks(size as usize)
                    .map(|c| Value::Array(c.to_vec()))
                    .collect(),
            )
        }
        ArrayContains => Value::Bool(as_array(f, 0, &args[0])?.contains(&args[1])),
        ArrayRange => {
            let (first, last, step) = (
                as_int(f, 0, &args[0])?,
                as_int(f, 1, &args[1])?,
                as_int(f, 2, &args[2])?,
            );
            if step == 0 {
                return Err(fail("The step of States.ArrayRange must not be 0"));
            }
            let count = if (step > 0 && first > last) || (step < 0 && first < last) {
                0
            } else {
                ((last as i128 - first as i128) / step as i128 + 1) as u128
            };
            if count > MAX_RANGE_ITEMS as u128 {
                return Err(fail(format!("States.ArrayRange may produce at most {MAX_RANGE_ITEMS} items, this call produces {count}")));
            }
            Value::Array(
                (0..count as i64)
                    .map(|i| Value::from(first + i * step))
                    .collect(),
            )
        }
        ArrayGetItem => {
            let a = as_array(f, 0, &args[0])?;
            let i = as_int(f, 1, &args[1])?;
            usize::try_from(i)
                .ok()
                .and_then(|i| a.get(i))
                .cloned()
                .ok_or_else(|| {
                    fail(format!(
                        "Index {i} is out of bounds of an array of {} items in States.ArrayGetItem",
                        a.len()
                    ))
                })?
        }
        ArrayLength => Value::from(as_array(f, 0, &args[0])?.len()),
        ArrayUnique => {
            let mut out: Vec<Value> = Vec::new();
            for v in as_array(f, 0, &args[0])? {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Value::Array(out)
        }
        Base64Encode => {
            let s = string_arg(f, 0, &args[0])?;
            check_len(f, &s)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
        }
        Base64Decode => {
            let s = string_arg(f, 0, &args[0])?;
            check_len(f, &s)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(|e| {
                    fail(format!(
                        "States.Base64Decode: the input is not valid base64: {e}"
                    ))
                })?;
            Value::String(
                String::from_utf8(bytes)
                    .map_err(|_| fail("States.Base64Decode: the decoded data is not UTF-8"))?,
            )
        }
        Hash => {
            let data = match &args[0] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            check_len(f, &data)?;
            let algorithm = as_str(f, 1, &args[1])?;
            Value::String(hash(algorithm, data.as_bytes())?)
        }
        JsonMerge => {
            let a = args[0]
                .as_object()
                .ok_or_else(|| fail("The first argument of States.JsonMerge must be an object"))?;
            let b = args[1]
                .as_object()
                .ok_or_else(|| fail("The second argument of States.JsonMerge must be an object"))?;
            match args[2] {
                Value::Bool(false) => {}
                Value::Bool(true) => return Err(fail("States.JsonMerge supports only a shallow merge: its third argument must be false")),
                _ => return Err(fail("The third argument of States.JsonMerge must be a boolean")),
            }
            let mut out = a.clone();
            for (k, v) in b {
                out.insert(k.clone(), v.clone());
            }
            Value::Object(out)
        }
        MathRandom => {
            let (start, end) = (as_int(f, 0, &args[0])?, as_int(f, 1, &args[1])?);
            if start >= end {
                return Err(fail(
                    "The start of States.MathRandom must be less than its end",
                ));
            }
            match args.get(2) {
                Some(seed) => {
                    let seed = as_int(f, 2, seed)?;
                    rand::rngs::StdRng::seed_from_u64(seed as u64)
                        .random_range(start..end)
                        .into()
                }
                None => rng.random_range(start..end).into(),
            }
        }
        MathAdd => {
            let (a, b) = (as_int(f, 0, &args[0])?, as_int(f, 1, &args[1])?);
            for (i, n) in [a, b].into_iter().enumerate() {
                if i32::try_from(n).is_err() {
                    return Err(fail(format!(
                        "The argument {} of States.MathAdd is outside the 32-bit integer range",
                        i + 1
                    )));
                }
            }
            Value::from(a + b)
        }
        StringSplit => {
            let s = string_arg(f, 0, &args[0])?;
            let delimiters = string_arg(f, 1, &args[1])?;
            Value::Array(
                s.split(|c| delimiters.contains(c))
                    .filter(|t| !t.is_empty())
                    .map(|t| Value::String(t.to_string()))
                    .collect(),
            )
        }
        Uuid => {
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            Value::String(
                uuid::Builder::from_random_bytes(bytes)
                    .into_uuid()
                    .to_string(),
            )
        }
    })
}

fn check_len(f: Function, s: &str) -> Result<()> {
    if s.chars().count() > MAX_ENCODE_INPUT {
        return Err(fail(format!(
            "The input of {} must be at most {MAX_ENCODE_INPUT} characters",
            f.name()
        )));
    }
    Ok(())
}

fn hash(algorithm: &str, data: &[u8]) -> Result<String> {
    use sha2::Digest as _;
    Ok(match algorithm {
        "MD5" => hex(&md5::Md5::digest(data)),
        "SHA-1" => hex(&sha1::Sha1::digest(data)),
        "SHA-256" => hex(&sha2::Sha256::digest(data)),
        "SHA-384" => hex(&sha2::Sha384::digest(data)),
        "SHA-512" => hex(&sha2::Sha512::digest(data)),
        other => {
            return Err(fail(format!(
                "The hash algorithm '{other}' is not supported; use one of MD5, SHA-1, SHA-256, SHA-384, SHA-512"
            )))
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
