//! OTLP/HTTP export: finished [`Span`]s encoded as an `ExportTraceServiceRequest`
//! (opentelemetry-proto's `trace/v1` and `collector/trace/v1` messages) straight into one
//! reused buffer, and posted to the collector.
//!
//! The encoding writes each span's fields from the [`Span`] as it was recorded, with
//! prost's wire primitives: no intermediate span, attribute or protobuf message is built,
//! so a batch of 512 spans costs its bytes and not a few thousand small allocations. The
//! resource (`service.name`, `service.namespace`) and the instrumentation scope are
//! encoded once, when the exporter is made. The field numbers below are those of
//! `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`; the tests
//! decode the output with opentelemetry-proto's generated types.

use crate::{Kind, Span, TraceContext};
use bytes::Bytes;
use opentelemetry::{Array, KeyValue, Value};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Field numbers of the messages written here.
mod field {
    // ExportTraceServiceRequest
    pub const RESOURCE_SPANS: u32 = 1;
    // ResourceSpans
    pub const RESOURCE: u32 = 1;
    pub const SCOPE_SPANS: u32 = 2;
    // Resource, InstrumentationScope
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const SCOPE_NAME: u32 = 1;
    pub const SCOPE_VERSION: u32 = 2;
    // ScopeSpans
    pub const SCOPE: u32 = 1;
    pub const SPANS: u32 = 2;
    // Span
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const LINKS: u32 = 13;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
    // Span.Link
    pub const LINK_TRACE_ID: u32 = 1;
    pub const LINK_SPAN_ID: u32 = 2;
    pub const LINK_TRACE_STATE: u32 = 3;
    pub const LINK_FLAGS: u32 = 6;
    // Status
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    // KeyValue
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
    // AnyValue
    pub const STRING: u32 = 1;
    pub const BOOL: u32 = 2;
    pub const INT: u32 = 3;
    pub const DOUBLE: u32 = 4;
    pub const ARRAY: u32 = 5;
    // ArrayValue
    pub const VALUES: u32 = 1;
}

/// `Status.code` of a failed span (`STATUS_CODE_ERROR`).
const STATUS_ERROR: u64 = 2;
/// `SpanFlags`: the W3C trace flags in the low byte, and whether the parent (or the
/// linked span) is remote is known (`HAS_IS_REMOTE`) and true (`IS_REMOTE`).
const FLAG_SAMPLED: u32 = 0x01;
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Encodes batches of spans for one service; the buffers are kept between batches.
pub(crate) struct Encoder {
    /// `ResourceSpans.resource` (tag included), encoded once.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (tag included), encoded once.
    scope: Vec<u8>,
    /// The batch's spans, each with its `ScopeSpans.spans` tag and length.
    spans: Vec<u8>,
    /// One span's fields while it is written (its length comes first).
    span: Vec<u8>,
    /// The whole request.
    out: Vec<u8>,
}

impl Encoder {
    pub(crate) fn new(service_name: &str, scope_version: &str) -> Self {
        let mut attrs = Vec::new();
        for kv in [
            KeyValue::new("service.name", service_name.to_string()),
            KeyValue::new("service.namespace", "nimbus"),
        ] {
            key_value(field::RESOURCE_ATTRIBUTES, &kv, &mut attrs);
        }
        let mut resource = Vec::new();
        message(field::RESOURCE, &attrs, &mut resource);
        let mut fields = Vec::new();
        string(field::SCOPE_NAME, "nimbus", &mut fields);
        string(field::SCOPE_VERSION, scope_version, &mut fields);
        let mut scope = Vec::new();
        message(field::SCOPE, &fields, &mut scope);
        Encoder {
            resource,
            scope,
            spans: Vec::new(),
            span: Vec::new(),
            out: Vec::new(),
        }
    }

    /// The `ExportTraceServiceRequest` of `spans` (one resource, one scope).
    pub(crate) fn encode(&mut self, spans: &[Span]) -> Bytes {
        self.spans.clear();
        for s in spans {
            self.span.clear();
            span(s, &mut self.span);
            message(field::SPANS, &self.span, &mut self.spans);
        }
        let scope_spans = self.scope.len() + self.spans.len();
        let resource_spans = self.resource.len() + delimited_len(field::SCOPE_SPANS, scope_spans);
        self.out.clear();
        self.out
            .reserve(delimited_len(field::RESOURCE_SPANS, resource_spans));
        delimited(field::RESOURCE_SPANS, resource_spans, &mut self.out);
        self.out.extend_from_slice(&self.resource);
        delimited(field::SCOPE_SPANS, scope_spans, &mut self.out);
        self.out.extend_from_slice(&self.scope);
        self.out.extend_from_slice(&self.spans);
        Bytes::copy_from_slice(&self.out)
    }
}

/// One span's fields, in field order.
fn span(s: &Span, buf: &mut Vec<u8>) {
    ids(field::TRACE_ID, field::SPAN_ID, &s.context, buf);
    if let Some(state) = s.context.tracestate.as_deref().filter(|t| !t.is_empty()) {
        string(field::TRACE_STATE, state, buf);
    }
    if s.parent != 0 {
        bytes_field(field::PARENT_SPAN_ID, &s.parent.to_be_bytes(), buf);
    }
    string(field::NAME, &s.name, buf);
    encode_key(field::KIND, WireType::Varint, buf);
    encode_varint(kind(s.kind), buf);
    fixed64(field::START, unix_nanos(s.start), buf);
    fixed64(field::END, unix_nanos(s.end.max(s.start)), buf);
    for kv in &s.attributes {
        key_value(field::ATTRIBUTES, kv, buf);
    }
    for l in &s.links {
        let len = link_len(l);
        delimited(field::LINKS, len, buf);
        ids(field::LINK_TRACE_ID, field::LINK_SPAN_ID, l, buf);
        if let Some(state) = l.tracestate.as_deref().filter(|t| !t.is_empty()) {
            string(field::LINK_TRACE_STATE, state, buf);
        }
        fixed32(field::LINK_FLAGS, flags(l, false), buf);
    }
    if let Some(e) = &s.error {
        let len = string_len(field::STATUS_MESSAGE, e) + 1 + encoded_len_varint(STATUS_ERROR);
        delimited(field::STATUS, len, buf);
        string(field::STATUS_MESSAGE, e, buf);
        encode_key(field::STATUS_CODE, WireType::Varint, buf);
        encode_varint(STATUS_ERROR, buf);
    }
    let remote = s.parent != 0 && s.parent_remote;
    fixed32(field::FLAGS, flags(&s.context, remote), buf);
}

fn flags(cx: &TraceContext, remote: bool) -> u32 {
    let sampled = if cx.is_sampled() { FLAG_SAMPLED } else { 0 };
    sampled | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn link_len(l: &TraceContext) -> usize {
    let state = l
        .tracestate
        .as_deref()
        .filter(|t| !t.is_empty())
        .map_or(0, |t| string_len(field::LINK_TRACE_STATE, t));
    ids_len() + state + 5
}

/// `SpanKind` values.
fn kind(k: Kind) -> u64 {
    match k {
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn ids(trace: u32, span: u32, cx: &TraceContext, buf: &mut Vec<u8>) {
    bytes_field(trace, &cx.trace_id.to_be_bytes(), buf);
    bytes_field(span, &cx.span_id.to_be_bytes(), buf);
}

/// The trace id (16 bytes) and span id (8 bytes) fields.
fn ids_len() -> usize {
    (2 + 16) + (2 + 8)
}

/// A `KeyValue` as field `tag`.
fn key_value(tag: u32, kv: &KeyValue, buf: &mut Vec<u8>) {
    let key = kv.key.as_str();
    let value = value_len(&kv.value);
    delimited(
        tag,
        string_len(field::KEY, key) + delimited_len(field::VALUE, value),
        buf,
    );
    string(field::KEY, key, buf);
    delimited(field::VALUE, value, buf);
    any_value(&kv.value, buf);
}

/// The fields of an `AnyValue` holding `v`.
fn value_len(v: &Value) -> usize {
    match v {
        Value::Bool(_) => 2,
        Value::I64(i) => 1 + encoded_len_varint(*i as u64),
        Value::F64(_) => 9,
        Value::String(s) => string_len(field::STRING, s.as_str()),
        Value::Array(a) => delimited_len(field::ARRAY, array_len(a)),
        // A kind of value added after this was written: an empty `AnyValue`.
        _ => 0,
    }
}

fn any_value(v: &Value, buf: &mut Vec<u8>) {
    match v {
        Value::Bool(b) => {
            encode_key(field::BOOL, WireType::Varint, buf);
            encode_varint(u64::from(*b), buf);
        }
        Value::I64(i) => {
            encode_key(field::INT, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        Value::F64(f) => fixed64(field::DOUBLE, f.to_bits(), buf),
        Value::String(s) => string(field::STRING, s.as_str(), buf),
        Value::Array(a) => {
            delimited(field::ARRAY, array_len(a), buf);
            match a {
                Array::Bool(v) => elements(v, |b| Value::Bool(*b), buf),
                Array::I64(v) => elements(v, |i| Value::I64(*i), buf),
                Array::F64(v) => elements(v, |f| Value::F64(*f), buf),
                Array::String(v) => elements(v, |s| Value::String(s.clone()), buf),
                _ => {}
            }
        }
        _ => {}
    }
}

/// The `ArrayValue` of `a`: each element an `AnyValue` in field `values`.
fn array_len(a: &Array) -> usize {
    fn sum<T>(v: &[T], f: impl Fn(&T) -> Value) -> usize {
        v.iter()
            .map(|x| delimited_len(field::VALUES, value_len(&f(x))))
            .sum()
    }
    match a {
        Array::Bool(v) => sum(v, |b| Value::Bool(*b)),
        Array::I64(v) => sum(v, |i| Value::I64(*i)),
        Array::F64(v) => sum(v, |f| Value::F64(*f)),
        Array::String(v) => sum(v, |s| Value::String(s.clone())),
        _ => 0,
    }
}

fn elements<T>(v: &[T], f: impl Fn(&T) -> Value, buf: &mut Vec<u8>) {
    for x in v {
        let value = f(x);
        delimited(field::VALUES, value_len(&value), buf);
        any_value(&value, buf);
    }
}

/// A length-delimited field's tag and length (its bytes follow).
fn delimited(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// The size of a length-delimited field of `len` bytes, tag and length included.
fn delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A nested message (already encoded) as field `tag`.
fn message(tag: u32, fields: &[u8], buf: &mut Vec<u8>) {
    delimited(tag, fields.len(), buf);
    buf.extend_from_slice(fields);
}

fn string(tag: u32, s: &str, buf: &mut Vec<u8>) {
    bytes_field(tag, s.as_bytes(), buf);
}

fn string_len(tag: u32, s: &str) -> usize {
    delimited_len(tag, s.len())
}

fn bytes_field(tag: u32, b: &[u8], buf: &mut Vec<u8>) {
    delimited(tag, b.len(), buf);
    buf.extend_from_slice(b);
}

fn fixed64(tag: u32, v: u64, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn fixed32(tag: u32, v: u32, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::ThirtyTwoBit, buf);
    buf.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    fn cx(trace_id: u128, span_id: u64, state: Option<&str>) -> TraceContext {
        TraceContext {
            trace_id,
            span_id,
            sampled: Some(true),
            tracestate: state.map(str::to_string),
        }
    }

    fn decode(bytes: &[u8]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(bytes).expect("a valid ExportTraceServiceRequest")
    }

    /// Every field written decodes, with opentelemetry-proto's types, to what was recorded.
    #[test]
    fn spans_decode_with_the_generated_types() {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let parent = cx(0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, None);
        let mut server = Span::new(
            "POST /2015-03-31/functions/{name}/invocations",
            Kind::Server,
            &cx(parent.trace_id, 0x1111, Some("vendor=value")),
            Some(&parent),
            start,
        );
        server.parent_remote = true;
        server.end = start + Duration::from_micros(250);
        server.attributes = vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.response.status_code", 200i64),
            KeyValue::new("faas.coldstart", true),
            KeyValue::new("ratio", 0.5),
            KeyValue::new("negative", -3i64),
            KeyValue::new(
                "list",
                Value::Array(Array::String(vec!["a".into(), "b".into()])),
            ),
            KeyValue::new("long", "x".repeat(300)),
        ];
        server.error = Some("Unhandled".into());
        server.links = vec![cx(7, 8, Some("k=v")), cx(9, 10, None)];
        let root = Span::new("root", Kind::Producer, &cx(5, 6, None), None, start);
        let mut enc = Encoder::new("svc", "1.2.3");
        // Twice through the same encoder: the buffers are reused, not appended to.
        let _ = enc.encode(std::slice::from_ref(&root));
        let req = decode(&enc.encode(&[server, root]));

        assert_eq!(req.resource_spans.len(), 1);
        let rs = &req.resource_spans[0];
        let attrs: Vec<(String, Option<Any>)> = rs
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone().and_then(|v| v.value)))
            .collect();
        assert_eq!(
            attrs,
            [
                ("service.name".into(), Some(Any::StringValue("svc".into()))),
                (
                    "service.namespace".into(),
                    Some(Any::StringValue("nimbus".into()))
                ),
            ]
        );
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("nimbus", "1.2.3")
        );
        assert_eq!(ss.spans.len(), 2);

        let s = &ss.spans[0];
        assert_eq!(s.trace_id, parent.trace_id.to_be_bytes());
        assert_eq!(s.span_id, 0x1111u64.to_be_bytes());
        assert_eq!(s.parent_span_id, parent.span_id.to_be_bytes());
        assert_eq!(s.trace_state, "vendor=value");
        assert_eq!(s.name, "POST /2015-03-31/functions/{name}/invocations");
        assert_eq!(s.kind, 2);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_123_456_789);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_123_706_789);
        assert_eq!(s.flags, 0x301, "sampled, parent known to be remote");
        let value = |k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            value("http.request.method"),
            Some(Any::StringValue("POST".into()))
        );
        assert_eq!(value("http.response.status_code"), Some(Any::IntValue(200)));
        assert_eq!(value("faas.coldstart"), Some(Any::BoolValue(true)));
        assert_eq!(value("ratio"), Some(Any::DoubleValue(0.5)));
        assert_eq!(value("negative"), Some(Any::IntValue(-3)));
        assert_eq!(value("long"), Some(Any::StringValue("x".repeat(300))));
        let Some(Any::ArrayValue(list)) = value("list") else {
            panic!("an array")
        };
        let items: Vec<_> = list.values.into_iter().map(|v| v.value).collect();
        assert_eq!(
            items,
            [
                Some(Any::StringValue("a".into())),
                Some(Any::StringValue("b".into()))
            ]
        );
        assert_eq!(s.attributes.len(), 7);
        let status = s.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "Unhandled"));
        assert_eq!(s.links.len(), 2);
        assert_eq!(s.links[0].trace_id, 7u128.to_be_bytes());
        assert_eq!(s.links[0].span_id, 8u64.to_be_bytes());
        assert_eq!(s.links[0].trace_state, "k=v");
        assert_eq!(s.links[0].flags, 0x101);
        assert_eq!(s.links[1].trace_state, "");

        let r = &ss.spans[1];
        assert_eq!(r.name, "root");
        assert_eq!(r.kind, 4);
        assert!(r.parent_span_id.is_empty(), "a root span has no parent");
        assert_eq!(r.flags, 0x101);
        assert!(r.status.is_none());
        assert_eq!(r.end_time_unix_nano, r.start_time_unix_nano);
    }

    #[test]
    fn an_empty_batch_is_a_valid_request() {
        let req = decode(&Encoder::new("svc", "0").encode(&[]));
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 0);
    }
}
