//! Trace contexts as they travel: W3C Trace Context (`traceparent`, `tracestate`) and
//! AWS X-Ray (`X-Amzn-Trace-Id`, `_X_AMZN_TRACE_ID`, `Lambda-Runtime-Trace-Id`), and the
//! conversion between them.
//!
//! Both carry a 128-bit trace id and a 64-bit parent span id. X-Ray writes the trace id as
//! `1-{8 hex: epoch seconds}-{24 hex}`: the root `1-5759e988-bd862e3fe1be46a994272793` is
//! the W3C trace id `5759e988bd862e3fe1be46a994272793`. New trace ids keep the current
//! time in their first 32 bits, so every id Nimbus makes is a valid X-Ray id too.

/// A position in a trace: the trace, one span of it, and the sampling decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The span (for an incoming header: the caller's span, the parent of ours); 0 when
    /// an X-Ray header named no `Parent`.
    pub span_id: u64,
    /// `None`: the sender left the decision to us (X-Ray `Sampled=?` or no `Sampled`).
    pub sampled: Option<bool>,
    /// W3C `tracestate`, passed on untouched.
    pub tracestate: Option<String>,
}

/// The header names, lower case as HTTP/2 and hyper spell them.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const XRAY: &str = "x-amzn-trace-id";

impl TraceContext {
    /// A new trace (its first span), with the current time in the trace id's first 32
    /// bits (as X-Ray ids have it).
    pub fn new_root(sampled: bool) -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as u32;
        let low: u128 = rand::random::<u128>() & ((1u128 << 96) - 1);
        let trace_id = (u128::from(secs) << 96) | low.max(1);
        TraceContext {
            trace_id,
            span_id: new_span_id(),
            sampled: Some(sampled),
            tracestate: None,
        }
    }

    /// A new span in this trace, child of this one.
    pub fn child(&self, sampled: bool) -> Self {
        TraceContext {
            trace_id: self.trace_id,
            span_id: new_span_id(),
            sampled: Some(sampled),
            tracestate: self.tracestate.clone(),
        }
    }

    /// Whether spans of this context are recorded (an undecided context is not).
    pub fn is_sampled(&self) -> bool {
        self.sampled == Some(true)
    }

    /// Reads the context of an incoming request: `traceparent` (with `tracestate`) wins
    /// over `X-Amzn-Trace-Id` when both are present and valid. `header` looks a header
    /// up by its lower-case name.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        if let Some(mut cx) = header(TRACEPARENT).and_then(Self::parse_traceparent) {
            cx.tracestate = header(TRACESTATE)
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 512)
                .map(str::to_string);
            return Some(cx);
        }
        header(XRAY).and_then(Self::parse_xray)
    }

    /// Parses a W3C `traceparent` (`00-{32 hex}-{16 hex}-{2 hex}`); invalid values
    /// (all-zero ids, version `ff`, upper-case hex, wrong lengths) give `None`.
    pub fn parse_traceparent(s: &str) -> Option<Self> {
        let s = s.trim();
        let mut parts = s.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        // Version 00 has exactly four fields; later versions may append more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        hex_u128(version, 2)?;
        let trace_id = hex_u128(trace, 32)?;
        let span_id = hex_u128(span, 16)? as u64;
        let flags = hex_u128(flags, 2)? as u8;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled: Some(flags & 1 == 1),
            tracestate: None,
        })
    }

    /// The W3C `traceparent` of this context.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.is_sampled())
        )
    }

    /// Parses an X-Ray trace header (`Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled=0|1|?`,
    /// fields in any order, others ignored). `Root` is required.
    pub fn parse_xray(s: &str) -> Option<Self> {
        let mut root = None;
        let mut parent = 0u64;
        let mut sampled = None;
        for field in s.split(';') {
            let (k, v) = field.split_once('=')?;
            match k.trim() {
                "Root" => {
                    let v = v.trim();
                    let rest = v.strip_prefix("1-")?;
                    let (time, id) = rest.split_once('-')?;
                    let hi = hex_u128(time, 8)?;
                    let lo = hex_u128(id, 24)?;
                    root = Some((hi << 96) | lo);
                }
                "Parent" => parent = hex_u128(v.trim(), 16)? as u64,
                "Sampled" => {
                    sampled = match v.trim() {
                        "1" => Some(true),
                        "0" => Some(false),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        let trace_id = root.filter(|&t| t != 0)?;
        Some(TraceContext {
            trace_id,
            span_id: parent,
            sampled,
            tracestate: None,
        })
    }

    /// This context as an X-Ray trace header (what Lambda puts in `_X_AMZN_TRACE_ID`).
    pub fn xray(&self) -> String {
        let id = format!("{:032x}", self.trace_id);
        format!(
            "Root=1-{}-{};Parent={:016x};Sampled={}",
            &id[..8],
            &id[8..],
            self.span_id,
            u8::from(self.is_sampled())
        )
    }
}

/// What a stored context puts between its header and its `tracestate`: a header (a
/// `traceparent` or an X-Ray header Nimbus wrote) never holds it, and the tracestate
/// follows it to the end of the string (a tracestate value may hold `;`).
const STATE_FIELD: &str = ";tracestate=";

impl TraceContext {
    /// The context as a work item stores it (`events.db`'s `trace`): its `traceparent`,
    /// then `;tracestate=` and the tracestate when it has one. See [`Self::parse_stored`].
    pub fn stored_traceparent(&self) -> String {
        self.with_state(self.traceparent())
    }

    /// [`Self::stored_traceparent`] with the X-Ray header first (`queues.db`'s `trace`,
    /// whose header part is SQS's `AWSTraceHeader`: see [`stored_header`]).
    pub fn stored_xray(&self) -> String {
        self.with_state(self.xray())
    }

    fn with_state(&self, header: String) -> String {
        match &self.tracestate {
            Some(state) => format!("{header}{STATE_FIELD}{state}"),
            None => header,
        }
    }

    /// Reads a stored context: a `traceparent` or an X-Ray header, with or without a
    /// `;tracestate=` part (so the bare headers stored before it was kept still parse).
    pub fn parse_stored(s: &str) -> Option<Self> {
        let (header, state) = match s.split_once(STATE_FIELD) {
            Some((h, st)) => (h, Some(st.trim()).filter(|st| !st.is_empty())),
            None => (s, None),
        };
        let mut cx = Self::parse_traceparent(header).or_else(|| Self::parse_xray(header))?;
        cx.tracestate = state.map(str::to_string);
        Some(cx)
    }
}

/// The header part of a stored context (without its tracestate): what SQS's
/// `AWSTraceHeader` shows.
pub fn stored_header(stored: &str) -> &str {
    stored.split_once(STATE_FIELD).map_or(stored, |(h, _)| h)
}

/// A random non-zero span id.
pub fn new_span_id() -> u64 {
    rand::random::<u64>().max(1)
}

/// Exactly `len` lower-case hex digits.
fn hex_u128(s: &str, len: usize) -> Option<u128> {
    if s.len() != len
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xray_root_is_the_w3c_trace_id() {
        let cx = TraceContext::parse_xray(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(cx.trace_id, 0x5759e988bd862e3fe1be46a994272793);
        assert_eq!(cx.span_id, 0x53995c3f42cd8ad8);
        assert_eq!(cx.sampled, Some(true));
        assert_eq!(
            cx.traceparent(),
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"
        );
        let back = TraceContext::parse_traceparent(&cx.traceparent()).unwrap();
        assert_eq!(
            back.xray(),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
        );
    }

    #[test]
    fn xray_fields_in_any_order_and_undecided_sampling() {
        let cx = TraceContext::parse_xray(
            "Sampled=?;Self=1-aaaa;Root=1-5759e988-bd862e3fe1be46a994272793",
        )
        .unwrap();
        assert_eq!(cx.span_id, 0);
        assert_eq!(cx.sampled, None);
        assert!(!cx.is_sampled());
        for bad in [
            "",
            "Parent=53995c3f42cd8ad8",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e988-bd862e3fe1be46a99427279",
            "Root=1-00000000-000000000000000000000000",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz",
            "garbage",
        ] {
            assert_eq!(TraceContext::parse_xray(bad), None, "{bad}");
        }
    }

    #[test]
    fn traceparent_validation() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = TraceContext::parse_traceparent(ok).unwrap();
        assert_eq!(cx.traceparent(), ok);
        let unsampled = TraceContext::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .unwrap();
        assert_eq!(unsampled.sampled, Some(false));
        // A later version may carry more fields.
        assert!(TraceContext::parse_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        )
        .is_some());
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "nonsense",
        ] {
            assert_eq!(TraceContext::parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn traceparent_wins_over_xray() {
        let h = |n: &str| match n {
            TRACEPARENT => Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            TRACESTATE => Some("congo=t61rcWkgMzE"),
            XRAY => Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"),
            _ => None,
        };
        let cx = TraceContext::from_headers(h).unwrap();
        assert_eq!(cx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(cx.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        // An invalid traceparent falls back to the X-Ray header.
        let h2 = |n: &str| match n {
            TRACEPARENT => Some("bogus"),
            XRAY => Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"),
            _ => None,
        };
        let cx = TraceContext::from_headers(h2).unwrap();
        assert_eq!(cx.trace_id, 0x5759e988bd862e3fe1be46a994272793);
        assert_eq!(TraceContext::from_headers(|_| None), None);
    }

    #[test]
    fn stored_contexts_keep_the_tracestate_and_old_rows_still_parse() {
        let mut cx = TraceContext::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        // Old rows: the bare headers.
        assert_eq!(
            TraceContext::parse_stored(&cx.traceparent()),
            Some(cx.clone())
        );
        assert_eq!(TraceContext::parse_stored(&cx.xray()), Some(cx.clone()));
        assert_eq!(cx.stored_traceparent(), cx.traceparent());
        // A tracestate value may hold `;` and `=` inside members.
        cx.tracestate = Some("congo=t61rcWkgMzE,rojo=00f0;67aa".into());
        for stored in [cx.stored_traceparent(), cx.stored_xray()] {
            assert_eq!(
                TraceContext::parse_stored(&stored),
                Some(cx.clone()),
                "{stored}"
            );
        }
        assert_eq!(
            cx.stored_xray(),
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1\
             ;tracestate=congo=t61rcWkgMzE,rojo=00f0;67aa"
        );
        assert_eq!(stored_header(&cx.stored_xray()), cx.xray());
        assert_eq!(stored_header(&cx.xray()), cx.xray());
        // An empty tracestate part is none; a bad header is no context.
        let empty = format!("{};tracestate=", cx.traceparent());
        assert_eq!(TraceContext::parse_stored(&empty).unwrap().tracestate, None);
        assert_eq!(TraceContext::parse_stored("bogus;tracestate=a=b"), None);
        // A child keeps the tracestate (passed on untouched).
        assert_eq!(cx.child(true).tracestate, cx.tracestate);
    }

    #[test]
    fn new_ids_are_valid_xray_ids_and_children_share_the_trace() {
        let root = TraceContext::new_root(true);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(((root.trace_id >> 96) as u64).abs_diff(secs) < 5);
        let parsed = TraceContext::parse_xray(&root.xray()).unwrap();
        assert_eq!(parsed, root);
        let child = root.child(false);
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(child.sampled, Some(false));
    }
}
