//! The tokenizer: JSONata's operators, literals, names, variables, regexes and comments.

use crate::error::{Error, Result};

/// A token and the character offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Op(&'static str),
    Str(String),
    Num(f64),
    Name(String),
    Var(String),
    Bool(bool),
    Null,
    Regex(String, String),
    End,
}

/// Symbolic operators, longest first (a lone `!` or `~` is S0204, as in JSONata).
const SYMBOLS: [&str; 33] = [
    "..", ":=", "!=", "<=", ">=", "~>", "?:", "??", "**", ".", "[", "]", "{", "}", "(", ")", ",",
    "@", "#", ";", ":", "?", "+", "-", "*", "/", "%", "|", "=", "<", ">", "^", "&",
];

fn is_name_end(c: char) -> bool {
    c.is_whitespace() || ".[]{}(),@#;:?+-*/%|=<>^&!~\"'`$".contains(c)
}

/// Splits an expression into tokens.
pub(crate) fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out: Vec<(Tok, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        // comments
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            let mut j = i + 2;
            loop {
                if j + 1 >= chars.len() {
                    return Err(Error::at("S0106", start, "Comment has no closing tag"));
                }
                if chars[j] == '*' && chars[j + 1] == '/' {
                    break;
                }
                j += 1;
            }
            i = j + 2;
            continue;
        }
        // regex in prefix position
        if c == '/' && regex_allowed(out.last().map(|t| &t.0)) {
            let mut j = i + 1;
            let mut depth = 0i32;
            let mut pattern = String::new();
            loop {
                let Some(&d) = chars.get(j) else {
                    return Err(Error::at(
                        "S0302",
                        start,
                        "No terminating / in regular expression",
                    ));
                };
                if d == '\\' {
                    pattern.push(d);
                    if let Some(&e) = chars.get(j + 1) {
                        pattern.push(e);
                    }
                    j += 2;
                    continue;
                }
                if d == '/' && depth == 0 {
                    break;
                }
                if d == '[' {
                    depth += 1;
                } else if d == ']' && depth > 0 {
                    depth -= 1;
                }
                pattern.push(d);
                j += 1;
            }
            if pattern.is_empty() {
                return Err(Error::at(
                    "S0301",
                    start,
                    "Empty regular expressions are not allowed",
                ));
            }
            j += 1;
            let mut flags = String::new();
            while let Some(&f) = chars.get(j) {
                if f == 'i' || f == 'm' || f == 'g' || f == 's' {
                    flags.push(f);
                    j += 1;
                } else {
                    break;
                }
            }
            out.push((Tok::Regex(pattern, flags), start));
            i = j;
            continue;
        }
        // strings
        if c == '"' || c == '\'' {
            let (s, j) = lex_string(&chars, i, c)?;
            out.push((Tok::Str(s), start));
            i = j;
            continue;
        }
        // numbers
        if c.is_ascii_digit() {
            let mut j = i;
            if chars[j] == '0' {
                j += 1;
            } else {
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
            }
            if j + 1 < chars.len() && chars[j] == '.' && chars[j + 1].is_ascii_digit() {
                j += 1;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
            }
            if j < chars.len() && (chars[j] == 'e' || chars[j] == 'E') {
                let mut k = j + 1;
                if k < chars.len() && (chars[k] == '+' || chars[k] == '-') {
                    k += 1;
                }
                if k < chars.len() && chars[k].is_ascii_digit() {
                    while k < chars.len() && chars[k].is_ascii_digit() {
                        k += 1;
                    }
                    j = k;
                }
            }
            let text: String = chars[i..j].iter().collect();
            let n: f64 = text.parse().unwrap_or(f64::INFINITY);
            if !n.is_finite() {
                return Err(Error::at("S0102", start, "Number out of range").with_token(text));
            }
            out.push((Tok::Num(n), start));
            i = j;
            continue;
        }
        // quoted names
        if c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '`' {
                j += 1;
            }
            if j >= chars.len() {
                return Err(Error::at(
                    "S0105",
                    start,
                    "Quoted property name must be terminated with a backquote (`)",
                ));
            }
            out.push((Tok::Name(chars[i + 1..j].iter().collect()), start));
            i = j + 1;
            continue;
        }
        // variables
        if c == '$' {
            let mut j = i + 1;
            if j < chars.len() && chars[j] == '$' {
                out.push((Tok::Var("$".into()), start));
                i = j + 1;
                continue;
            }
            while j < chars.len() && !is_name_end(chars[j]) {
                j += 1;
            }
            out.push((Tok::Var(chars[i + 1..j].iter().collect()), start));
            i = j;
            continue;
        }
        // symbolic operators (longest first)
        if let Some(op) = SYMBOLS.iter().find(|op| {
            // symbolic operators are ASCII
            let ob = op.as_bytes();
            ob.iter()
                .enumerate()
                .all(|(k, b)| chars.get(i + k) == Some(&(*b as char)))
        }) {
            out.push((Tok::Op(op), start));
            i += op.chars().count();
            continue;
        }
        // names and keywords
        let mut j = i;
        while j < chars.len() && !is_name_end(chars[j]) {
            j += 1;
        }
        if j == i {
            return Err(Error::at("S0204", start, format!("Unknown operator: {c}"))
                .with_token(c.to_string()));
        }
        let name: String = chars[i..j].iter().collect();
        let tok = match name.as_str() {
            "and" => Tok::Op("and"),
            "or" => Tok::Op("or"),
            "in" => Tok::Op("in"),
            "true" => Tok::Bool(true),
            "false" => Tok::Bool(false),
            "null" => Tok::Null,
            _ => Tok::Name(name),
        };
        out.push((tok, start));
        i = j;
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

fn regex_allowed(prev: Option<&Tok>) -> bool {
    match prev {
        None => true,
        Some(Tok::Op(op)) => !matches!(*op, ")" | "]" | "}"),
        _ => false,
    }
}

fn lex_string(chars: &[char], start: usize, quote: char) -> Result<(String, usize)> {
    let mut s = String::new();
    let mut j = start + 1;
    loop {
        let Some(&d) = chars.get(j) else {
            return Err(Error::at(
                "S0101",
                start,
                "String literal must be terminated by a matching quote",
            ));
        };
        if d == quote {
            return Ok((s, j + 1));
        }
        if d == '\\' {
            let Some(&e) = chars.get(j + 1) else {
                return Err(Error::at(
                    "S0101",
                    start,
                    "String literal must be terminated by a matching quote",
                ));
            };
            j += 2;
            match e {
                '"' => s.push('"'),
                '\'' => s.push('\''),
                '\\' => s.push('\\'),
                '/' => s.push('/'),
                'b' => s.push('\u{8}'),
                'f' => s.push('\u{c}'),
                'n' => s.push('\n'),
                'r' => s.push('\r'),
                't' => s.push('\t'),
                'u' => {
                    let hex: String = chars
                        .get(j..j + 4)
                        .map(|h| h.iter().collect())
                        .unwrap_or_default();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == 4)
                        .ok_or_else(|| {
                            Error::at(
                                "S0104",
                                j,
                                "The escape sequence \\u must be followed by 4 hex digits",
                            )
                        })?;
                    j += 4;
                    // surrogate pairs
                    if (0xD800..0xDC00).contains(&code)
                        && chars.get(j) == Some(&'\\')
                        && chars.get(j + 1) == Some(&'u')
                    {
                        let hex2: String = chars
                            .get(j + 2..j + 6)
                            .map(|h| h.iter().collect())
                            .unwrap_or_default();
                        if let Ok(low) = u32::from_str_radix(&hex2, 16) {
                            if (0xDC00..0xE000).contains(&low) {
                                let cp = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                                s.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                                j += 6;
                                continue;
                            }
                        }
                    }
                    s.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                }
                other => {
                    return Err(Error::at(
                        "S0103",
                        j - 1,
                        format!("Unsupported escape sequence: \\{other}"),
                    )
                    .with_token(other.to_string()))
                }
            }
            continue;
        }
        s.push(d);
        j += 1;
    }
}
