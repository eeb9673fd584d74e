//! Message attributes: SQS's rules for them, their size, the shape Lambda's SQS events
//! (and the store) keep them in, and selection by `MessageAttributeNames`; message body
//! characters.

use crate::SqsError;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Most message attributes on one message.
pub const MAX_ATTRIBUTES: usize = 10;

/// A message attribute as a request carries it (`BinaryValue` base64 in both protocols).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AttributeValueIn {
    pub data_type: Option<String>,
    pub string_value: Option<String>,
    pub binary_value: Option<String>,
    pub string_list_values: Vec<Value>,
    pub binary_list_values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    String(String),
    Binary(Vec<u8>),
}

/// A checked message attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// `String`, `Number` or `Binary`, with an optional `.label`.
    pub data_type: String,
    pub value: AttrValue,
}

fn bad_attr(name: &str, why: &str) -> SqsError {
    SqsError::InvalidParameterValue(format!("Message attribute {name:?} is invalid: {why}"))
}

/// Checks message attributes as SQS does: at most 10; names of 1-256 of `[A-Za-z0-9_.-]`,
/// not starting with `AWS.`/`Amazon.` (any case), no leading, trailing or double `.`;
/// `DataType` `String`, `Number` or `Binary` with an optional label; a value of the kind
/// the type names, numbers parseable.
pub fn check_message_attributes(
    input: BTreeMap<String, AttributeValueIn>,
) -> Result<BTreeMap<String, MessageAttribute>, SqsError> {
    if input.len() > MAX_ATTRIBUTES {
        return Err(SqsError::InvalidParameterValue(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_ATTRIBUTES}].",
            input.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (name, a) in input {
        let lower = name.to_ascii_lowercase();
        if name.is_empty()
            || name.len() > 256
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            || name.starts_with('.')
            || name.ends_with('.')
            || name.contains("..")
        {
            return Err(bad_attr(
                &name,
                "names are 1-256 letters, digits, '_', '-' and '.', no leading, trailing or repeated '.'",
            ));
        }
        if lower.starts_with("aws.") || lower.starts_with("amazon.") {
            return Err(bad_attr(
                &name,
                "the prefixes AWS. and Amazon. are reserved",
            ));
        }
        let data_type = a
            .data_type
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad_attr(&name, "it must have a DataType"))?;
        let base = data_type.split('.').next().unwrap_or_default();
        if data_type.len() > 256 {
            return Err(bad_attr(&name, "DataType is longer than 256 characters"));
        }
        if !a.string_list_values.is_empty() || !a.binary_list_values.is_empty() {
            return Err(bad_attr(
                &name,
                "StringListValues and BinaryListValues are not implemented by SQS",
            ));
        }
        let value = match base {
            "String" | "Number" => {
                let s = a.string_value.ok_or_else(|| {
                    bad_attr(&name, &format!("a {base} attribute needs a StringValue"))
                })?;
                if s.is_empty() {
                    return Err(bad_attr(&name, "StringValue must not be empty"));
                }
                if base == "Number" && s.trim().parse::<f64>().is_err() {
                    return Err(bad_attr(&name, &format!("{s:?} is not a number")));
                }
                check_chars(&s)
                    .map_err(|_| bad_attr(&name, "invalid characters in StringValue"))?;
                AttrValue::String(s)
            }
            "Binary" => {
                let b = a
                    .binary_value
                    .ok_or_else(|| bad_attr(&name, "a Binary attribute needs a BinaryValue"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b.as_bytes())
                    .map_err(|_| bad_attr(&name, "BinaryValue is not base64"))?;
                if bytes.is_empty() {
                    return Err(bad_attr(&name, "BinaryValue must not be empty"));
                }
                AttrValue::Binary(bytes)
            }
            _ => {
                return Err(bad_attr(
                    &name,
                    &format!("DataType {data_type:?} is not String, Number or Binary[.label]"),
                ))
            }
        };
        out.insert(name, MessageAttribute { data_type, value });
    }
    Ok(out)
}

/// The system attributes a sender may give: `AWSTraceHeader` (a String) only.
pub fn check_system_attributes(
    input: BTreeMap<String, AttributeValueIn>,
) -> Result<BTreeMap<String, MessageAttribute>, SqsError> {
    if let Some(other) = input.keys().find(|k| *k != "AWSTraceHeader") {
        return Err(SqsError::InvalidParameterValue(format!(
            "Message system attribute name '{other}' is invalid: only AWSTraceHeader may be sent"
        )));
    }
    let checked = check_message_attributes_unreserved(input)?;
    if checked
        .values()
        .any(|a| !matches!(a.value, AttrValue::String(_)) || a.data_type != "String")
    {
        return Err(SqsError::InvalidParameterValue(
            "AWSTraceHeader must be a String attribute".into(),
        ));
    }
    Ok(checked)
}

/// [`check_message_attributes`] minus the reserved-prefix rule (system attribute names).
fn check_message_attributes_unreserved(
    input: BTreeMap<String, AttributeValueIn>,
) -> Result<BTreeMap<String, MessageAttribute>, SqsError> {
    let mut out = BTreeMap::new();
    for (name, a) in input {
        let mut one = BTreeMap::new();
        one.insert("x".to_string(), a);
        let mut checked = check_message_attributes(one)?;
        if let Some(v) = checked.remove("x") {
            out.insert(name, v);
        }
    }
    Ok(out)
}

/// The bytes attributes count towards a message's size: names, types and values.
pub fn size(attrs: &BTreeMap<String, MessageAttribute>) -> usize {
    attrs
        .iter()
        .map(|(n, a)| {
            n.len()
                + a.data_type.len()
                + match &a.value {
                    AttrValue::String(s) => s.len(),
                    AttrValue::Binary(b) => b.len(),
                }
        })
        .sum()
}

/// The shape Lambda's SQS events carry attributes in (and the store keeps them in):
/// `{"name":{"stringValue"|"binaryValue" (base64),"stringListValues":[],"binaryListValues":[],"dataType"}}`.
pub fn to_event_shape(attrs: &BTreeMap<String, MessageAttribute>) -> Value {
    let mut out = Map::new();
    for (n, a) in attrs {
        let mut v = json!({
            "stringListValues": [], "binaryListValues": [], "dataType": a.data_type,
        });
        match &a.value {
            AttrValue::String(s) => v["stringValue"] = json!(s),
            AttrValue::Binary(b) => {
                v["binaryValue"] = json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
        out.insert(n.clone(), v);
    }
    Value::Object(out)
}

/// Reads attributes back from [`to_event_shape`]'s shape (also what the native API
/// stores); entries it cannot read are skipped.
pub fn from_event_shape(v: &Value) -> BTreeMap<String, MessageAttribute> {
    let mut out = BTreeMap::new();
    let Some(obj) = v.as_object() else {
        return out;
    };
    for (n, a) in obj {
        let data_type = a["dataType"].as_str().unwrap_or("String").to_string();
        let value = if let Some(s) = a["stringValue"].as_str() {
            AttrValue::String(s.to_string())
        } else if let Some(b) = a["binaryValue"].as_str() {
            match base64::engine::general_purpose::STANDARD.decode(b.as_bytes()) {
                Ok(bytes) => AttrValue::Binary(bytes),
                Err(_) => continue,
            }
        } else {
            continue;
        };
        out.insert(n.clone(), MessageAttribute { data_type, value });
    }
    out
}

/// The JSON protocol's shape: `{"name":{"DataType","StringValue"|"BinaryValue"}}`.
pub fn to_wire(attrs: &BTreeMap<String, MessageAttribute>) -> Value {
    let mut out = Map::new();
    for (n, a) in attrs {
        let mut v = json!({ "DataType": a.data_type });
        match &a.value {
            AttrValue::String(s) => v["StringValue"] = json!(s),
            AttrValue::Binary(b) => {
                v["BinaryValue"] = json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
        }
        out.insert(n.clone(), v);
    }
    Value::Object(out)
}

/// The attributes `names` ask for: `All` or `.*` (every one), `prefix.*`, exact names.
pub fn select(
    attrs: &BTreeMap<String, MessageAttribute>,
    names: &[String],
) -> BTreeMap<String, MessageAttribute> {
    attrs
        .iter()
        .filter(|(n, _)| {
            names.iter().any(|want| {
                want == "All"
                    || want == ".*"
                    || want == *n
                    || want
                        .strip_suffix(".*")
                        .is_some_and(|p| n.starts_with(p) && n[p.len()..].starts_with('.'))
            })
        })
        .map(|(n, a)| (n.clone(), a.clone()))
        .collect()
}

/// SQS's body characters: `#x9 #xA #xD #x20–#xD7FF #xE000–#xFFFD #x10000–#x10FFFF`.
pub fn check_body(body: &str) -> Result<(), SqsError> {
    check_chars(body).map_err(|c| {
        SqsError::InvalidMessageContents(format!(
            "Invalid binary character '#x{:X}' was found in the message body, the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
            c as u32
        ))
    })
}

fn check_chars(s: &str) -> Result<(), char> {
    match s.chars().find(|&c| {
        !(matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{D7FF}').contains(&c)
            || ('\u{E000}'..='\u{FFFD}').contains(&c)
            || c >= '\u{10000}')
    }) {
        Some(c) => Err(c),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(t: &str, s: Option<&str>, b: Option<&str>) -> AttributeValueIn {
        AttributeValueIn {
            data_type: Some(t.into()),
            string_value: s.map(Into::into),
            binary_value: b.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn rules_shapes_and_selection() {
        let ok = check_message_attributes(BTreeMap::from([
            ("a.b".to_string(), input("Number.int", Some("42"), None)),
            ("bin".to_string(), input("Binary", None, Some("AQI="))),
        ]))
        .unwrap();
        assert_eq!(ok["bin"].value, AttrValue::Binary(vec![1, 2]));
        assert_eq!(from_event_shape(&to_event_shape(&ok)), ok);
        assert_eq!(size(&ok), 3 + 10 + 2 + 3 + 6 + 2);
        let sel = select(&ok, &["a.*".to_string()]);
        assert_eq!(sel.keys().collect::<Vec<_>>(), ["a.b"]);
        assert_eq!(select(&ok, &["All".to_string()]).len(), 2);
        for (name, a) in [
            ("AWS.x", input("String", Some("v"), None)),
            ("x", input("Number", Some("nope"), None)),
            ("x", input("Float", Some("1"), None)),
            ("x", input("Binary", None, Some("***"))),
            ("x", input("String", None, None)),
            ("a..b", input("String", Some("v"), None)),
        ] {
            let e = check_message_attributes(BTreeMap::from([(name.to_string(), a)])).unwrap_err();
            assert!(matches!(e, SqsError::InvalidParameterValue(_)), "{e}");
        }
        assert!(check_body("tab\tok \u{10000}").is_ok());
        let e = check_body("bell\u{7}").unwrap_err();
        assert_eq!(e.shape(), "InvalidMessageContents");
        assert!(e.to_string().contains("#x7"), "{e}");
    }
}
