//! Bytes in, bytes out: the JSON body or the query form into a [`Request`], and a result
//! (in the JSON protocol's shape) out as JSON or as the query protocol's XML.

use crate::{Protocol, Rendered, Request, SqsError, JSON_CONTENT_TYPE, XMLNS};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Decodes a request. JSON protocol: `target` is the operation (after `AmazonSQS.`) and
/// `body` its JSON input (empty: `{}`). Query protocol: `body` is the form, with `Action`.
/// Anything malformed is an error and nothing else happens.
pub fn decode(protocol: Protocol, target: Option<&str>, body: &[u8]) -> Result<Request, SqsError> {
    match protocol {
        Protocol::Json => {
            let op = target.ok_or_else(|| {
                SqsError::MissingParameter("the X-Amz-Target header names no operation".into())
            })?;
            let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
                Value::Object(Map::new())
            } else {
                serde_json::from_slice(body).map_err(|e| {
                    SqsError::Malformed(format!("the request body is not valid JSON: {e}"))
                })?
            };
            Request::from_input(op, v)
        }
        Protocol::Query => {
            let (op, v) = fold_query(body)?;
            Request::from_input(&op, v)
        }
    }
}

enum Node {
    Leaf(String),
    Branch(BTreeMap<String, Node>),
}

/// Integer parameters (query values are text).
const INTEGERS: &[&str] = &[
    "MaxNumberOfMessages",
    "VisibilityTimeout",
    "WaitTimeSeconds",
    "DelaySeconds",
    "MaxResults",
    "MaxNumberOfMessagesPerSecond",
];

/// The form's parameters folded into the JSON protocol's input shape; returns the Action.
fn fold_query(body: &[u8]) -> Result<(String, Value), SqsError> {
    if std::str::from_utf8(body).is_err() {
        return Err(SqsError::Malformed(
            "the request body is not a UTF-8 form".into(),
        ));
    }
    let mut root = BTreeMap::new();
    let mut action = None;
    for (k, v) in form_urlencoded::parse(body) {
        let (k, v) = (k.into_owned(), v.into_owned());
        match k.as_str() {
            "Action" => action = Some(v),
            "Version" => {}
            _ => insert(&mut root, &k, v)?,
        }
    }
    let op = action.filter(|a| !a.is_empty()).ok_or_else(|| {
        SqsError::Malformed("the request has no Action: send Action=<operation>&…".into())
    })?;
    let v = convert(&op, &root)?;
    Ok((op, Value::Object(v)))
}

fn insert(root: &mut BTreeMap<String, Node>, key: &str, value: String) -> Result<(), SqsError> {
    let bad = || SqsError::Malformed(format!("malformed query parameter {key:?}"));
    let segs: Vec<&str> = key.split('.').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(bad());
    }
    let mut node = root;
    for (i, seg) in segs.iter().enumerate() {
        if i + 1 == segs.len() {
            if node.insert(seg.to_string(), Node::Leaf(value)).is_some() {
                return Err(bad());
            }
            return Ok(());
        }
        let next = node
            .entry(seg.to_string())
            .or_insert_with(|| Node::Branch(BTreeMap::new()));
        match next {
            Node::Branch(b) => node = b,
            Node::Leaf(_) => return Err(bad()),
        }
    }
    Ok(())
}

/// The members of an indexed list (`X.1`, `X.2`, …) in index order.
fn indexed<'a>(key: &str, node: &'a Node) -> Result<Vec<&'a Node>, SqsError> {
    let Node::Branch(b) = node else {
        return Err(SqsError::Malformed(format!(
            "{key} is a list: send {key}.1, {key}.2, …"
        )));
    };
    let mut items: Vec<(u32, &Node)> = Vec::with_capacity(b.len());
    for (i, n) in b {
        let idx: u32 = i.parse().map_err(|_| {
            SqsError::Malformed(format!("{key}.{i}: list members are numbered from 1"))
        })?;
        items.push((idx, n));
    }
    items.sort_by_key(|(i, _)| *i);
    Ok(items.into_iter().map(|(_, n)| n).collect())
}

fn leaf<'a>(n: Option<&'a Node>, what: &str) -> Result<&'a str, SqsError> {
    match n {
        Some(Node::Leaf(s)) => Ok(s),
        _ => Err(SqsError::Malformed(format!(
            "{what} is missing or not a value"
        ))),
    }
}

fn branch<'a>(n: &'a Node, what: &str) -> Result<&'a BTreeMap<String, Node>, SqsError> {
    match n {
        Node::Branch(b) => Ok(b),
        Node::Leaf(_) => Err(SqsError::Malformed(format!("{what} must have members"))),
    }
}

fn convert(op: &str, b: &BTreeMap<String, Node>) -> Result<Map<String, Value>, SqsError> {
    let mut out = Map::new();
    for (k, node) in b {
        match k.as_str() {
            "Attribute" | "Tag" => {
                let (name, value, to) = if k == "Attribute" {
                    ("Name", "Value", "Attributes")
                } else {
                    (
                        "Key",
                        "Value",
                        if op == "CreateQueue" { "tags" } else { "Tags" },
                    )
                };
                let mut m = Map::new();
                for item in indexed(k, node)? {
                    let item = branch(item, k)?;
                    m.insert(
                        leaf(item.get(name), &format!("{k}.N.{name}"))?.to_string(),
                        Value::String(
                            leaf(item.get(value), &format!("{k}.N.{value}"))
                                .unwrap_or_default()
                                .to_string(),
                        ),
                    );
                }
                out.insert(to.into(), Value::Object(m));
            }
            "TagKey" | "AttributeName" | "MessageAttributeName" | "MessageSystemAttributeName" => {
                let items = indexed(k, node)?
                    .into_iter()
                    .map(|n| leaf(Some(n), k).map(|s| Value::String(s.to_string())))
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert(format!("{k}s"), Value::Array(items));
            }
            "MessageAttribute" | "MessageSystemAttribute" => {
                let mut m = Map::new();
                for item in indexed(k, node)? {
                    let item = branch(item, k)?;
                    let name = leaf(item.get("Name"), &format!("{k}.N.Name"))?;
                    let value = match item.get("Value") {
                        Some(v) => Value::Object(convert(op, branch(v, "Value")?)?),
                        None => Value::Object(Map::new()),
                    };
                    m.insert(name.to_string(), value);
                }
                out.insert(format!("{k}s"), Value::Object(m));
            }
            entry if entry.ends_with("RequestEntry") => {
                let items = indexed(k, node)?
                    .into_iter()
                    .map(|n| convert(op, branch(n, k)?).map(Value::Object))
                    .collect::<Result<Vec<_>, _>>()?;
                out.insert("Entries".into(), Value::Array(items));
            }
            _ => {
                let v = match node {
                    Node::Leaf(s) if INTEGERS.contains(&k.as_str()) => {
                        match s.trim().parse::<i64>() {
                            Ok(n) => Value::from(n),
                            Err(_) => {
                                return Err(crate::invalid(k, s, "it must be an integer"));
                            }
                        }
                    }
                    Node::Leaf(s) => Value::String(s.clone()),
                    Node::Branch(inner) => Value::Object(convert(op, inner)?),
                };
                out.insert(k.clone(), v);
            }
        }
    }
    Ok(out)
}

/// The successful answer to `op` whose output (JSON protocol shape) is `out`.
pub fn render_ok(protocol: Protocol, op: &str, out: &Value, request_id: &str) -> Rendered {
    match protocol {
        Protocol::Json => Rendered {
            status: 200,
            content_type: JSON_CONTENT_TYPE,
            headers: Vec::new(),
            body: out.to_string().into_bytes(),
        },
        Protocol::Query => {
            let mut xml = format!("<?xml version=\"1.0\"?><{op}Response xmlns=\"{XMLNS}\">");
            if out.as_object().is_some_and(|o| !o.is_empty()) {
                xml.push_str(&format!("<{op}Result>"));
                if let Some(o) = out.as_object() {
                    fields(&mut xml, op, o);
                }
                xml.push_str(&format!("</{op}Result>"));
            }
            xml.push_str(&format!(
                "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{op}Response>",
                xml_escape(request_id)
            ));
            Rendered {
                status: 200,
                content_type: "text/xml",
                headers: Vec::new(),
                body: xml.into_bytes(),
            }
        }
    }
}

fn fields(xml: &mut String, op: &str, o: &Map<String, Value>) {
    for (k, v) in o {
        match (k.as_str(), v) {
            ("Attributes", Value::Object(m)) => pairs(xml, "Attribute", "Name", "Value", m),
            ("Tags", Value::Object(m)) => pairs(xml, "Tag", "Key", "Value", m),
            ("MessageAttributes", Value::Object(m)) => {
                for (name, a) in m {
                    xml.push_str(&format!(
                        "<MessageAttribute><Name>{}</Name><Value>",
                        xml_escape(name)
                    ));
                    if let Some(a) = a.as_object() {
                        fields(xml, op, a);
                    }
                    xml.push_str("</Value></MessageAttribute>");
                }
            }
            (_, Value::Array(items)) => {
                let el = match k.as_str() {
                    "QueueUrls" | "queueUrls" => "QueueUrl".to_string(),
                    "Messages" => "Message".to_string(),
                    "Successful" | "Results" => format!("{op}ResultEntry"),
                    "Failed" => "BatchResultErrorEntry".to_string(),
                    other => other.to_string(),
                };
                for item in items {
                    element(xml, op, &el, item);
                }
            }
            _ => element(xml, op, k, v),
        }
    }
}

fn pairs(xml: &mut String, el: &str, key: &str, value: &str, m: &Map<String, Value>) {
    for (k, v) in m {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        xml.push_str(&format!(
            "<{el}><{key}>{}</{key}><{value}>{}</{value}></{el}>",
            xml_escape(k),
            xml_escape(&v)
        ));
    }
}

fn element(xml: &mut String, op: &str, el: &str, v: &Value) {
    match v {
        Value::Null => {}
        Value::Object(o) => {
            xml.push_str(&format!("<{el}>"));
            fields(xml, op, o);
            xml.push_str(&format!("</{el}>"));
        }
        Value::String(s) => xml.push_str(&format!("<{el}>{}</{el}>", xml_escape(s))),
        other => xml.push_str(&format!("<{el}>{other}</{el}>")),
    }
}

/// Text for XML: `& < > " '` escaped, and characters XML 1.0 cannot hold as `&#xN;`
/// (SQS bodies may hold `\r`, kept by escaping it).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_query_form_folds_into_the_json_shape() {
        let form = "Action=SendMessageBatch&Version=2012-11-05&QueueUrl=http%3A%2F%2Fh%2F0%2Fq\
            &SendMessageBatchRequestEntry.2.Id=b&SendMessageBatchRequestEntry.2.MessageBody=two\
            &SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=one\
            &SendMessageBatchRequestEntry.1.DelaySeconds=5\
            &SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=k\
            &SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String\
            &SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v";
        let (op, v) = fold_query(form.as_bytes()).unwrap();
        assert_eq!(op, "SendMessageBatch");
        assert_eq!(
            v,
            json!({
                "QueueUrl": "http://h/0/q",
                "Entries": [
                    {"Id": "a", "MessageBody": "one", "DelaySeconds": 5,
                     "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
                    {"Id": "b", "MessageBody": "two"},
                ]
            })
        );
        let (_, v) = fold_query(
            b"Action=CreateQueue&QueueName=q&Attribute.1.Name=DelaySeconds&Attribute.1.Value=3&Tag.1.Key=t&Tag.1.Value=1",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"QueueName": "q", "Attributes": {"DelaySeconds": "3"}, "tags": {"t": "1"}})
        );
        let (_, v) = fold_query(
            b"Action=ReceiveMessage&QueueUrl=q&AttributeName.1=All&MessageAttributeName.1=a.*&WaitTimeSeconds=2",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"QueueUrl": "q", "AttributeNames": ["All"], "MessageAttributeNames": ["a.*"], "WaitTimeSeconds": 2})
        );
        for bad in [
            &b"QueueName=q"[..],
            b"Action=ReceiveMessage&QueueUrl=q&WaitTimeSeconds=soon",
            b"Action=CreateQueue&QueueName=q&Attribute.x.Name=a",
            b"Action=CreateQueue&Attribute=1&Attribute.1.Name=a",
            b"Action=CreateQueue&QueueName=\xff",
        ] {
            assert!(
                decode(Protocol::Query, None, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The fuzz target's checks (fuzz/fuzz_targets/sqs_decode.rs) on stable: byte-level
    /// mutants of valid requests in both protocols never panic.
    #[test]
    fn mutated_requests_never_panic() {
        let seeds: [(Protocol, Option<&str>, &[u8]); 3] = [
            (
                Protocol::Json,
                Some("SendMessageBatch"),
                br#"{"QueueUrl":"q","Entries":[{"Id":"a","MessageBody":"x","MessageAttributes":{"k":{"DataType":"Binary","BinaryValue":"AQ=="}}}]}"#,
            ),
            (
                Protocol::Query,
                None,
                b"Action=SendMessageBatch&QueueUrl=q&SendMessageBatchRequestEntry.1.Id=a&SendMessageBatchRequestEntry.1.MessageBody=x&SendMessageBatchRequestEntry.1.MessageAttribute.1.Name=k&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType=String&SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue=v",
            ),
            (
                Protocol::Query,
                None,
                b"Action=CreateQueue&QueueName=q&Attribute.1.Name=RedrivePolicy&Attribute.1.Value=%7B%7D&Tag.1.Key=a&Tag.1.Value=b",
            ),
        ];
        let tokens: [&[u8]; 8] = [b".", b"=", b"&", b"1", b"%", b"{", b"\"", b".Value."];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let (protocol, target, seed) = seeds[(next() % 3) as usize];
            let mut bytes = seed.to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % (bytes.len() + 1);
                match next() % 3 {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => {
                        let t = tokens[(next() % tokens.len() as u64) as usize];
                        bytes.splice(at..at, t.iter().copied());
                    }
                    _ => bytes.insert(at, next() as u8),
                }
            }
            match decode(protocol, target, &bytes) {
                Ok(r) => {
                    let _ = r.queue_name();
                    let _ = render_ok(protocol, r.op(), &json!({"A": [1, {"B": "c"}]}), "r");
                }
                Err(e) => {
                    let _ = e.render(Protocol::Json, "r");
                    let _ = e.render(Protocol::Query, "r");
                }
            }
        }
    }

    #[test]
    fn xml_output_and_error_shapes() {
        let out = json!({
            "Messages": [{
                "MessageId": "m1", "Body": "a<b", "Attributes": {"SentTimestamp": "1"},
                "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}},
            }]
        });
        let r = render_ok(Protocol::Query, "ReceiveMessage", &out, "rid");
        let xml = String::from_utf8(r.body).unwrap();
        assert!(!xml.contains("<Attributes>"), "{xml}");
        assert!(
            // Elements in the order of the fields (serde_json keeps it: `preserve_order`).
            xml.contains("<Message><MessageId>m1</MessageId><Body>a&lt;b</Body><Attribute><Name>SentTimestamp</Name><Value>1</Value></Attribute><MessageAttribute><Name>k</Name><Value><DataType>String</DataType><StringValue>v</StringValue></Value></MessageAttribute></Message>"),
            "{xml}"
        );
        let r = render_ok(Protocol::Query, "DeleteQueue", &json!({}), "rid");
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            format!("<?xml version=\"1.0\"?><DeleteQueueResponse xmlns=\"{XMLNS}\"><ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata></DeleteQueueResponse>")
        );
        let e = SqsError::QueueDoesNotExist.render(Protocol::Json, "rid");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.headers,
            vec![(
                "x-amzn-query-error",
                "AWS.SimpleQueueService.NonExistentQueue;Sender".to_string()
            )]
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&e.body).unwrap()["__type"],
            "com.amazonaws.sqs#QueueDoesNotExist"
        );
        let e = SqsError::QueueDoesNotExist.render(Protocol::Query, "rid");
        let xml = String::from_utf8(e.body).unwrap();
        assert!(
            xml.contains("<Code>AWS.SimpleQueueService.NonExistentQueue</Code>"),
            "{xml}"
        );
    }
}
