//! Where spans go and which traces are kept: `--otlp-endpoint URL` or the standard
//! OpenTelemetry variables.

use crate::context::TraceContext;
use crate::TraceError;
use std::time::Duration;

/// Export settings. Tracing is off unless an endpoint is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The full OTLP/HTTP traces URL (`…/v1/traces`).
    pub traces_url: String,
    /// `service.name` of the exported resource (`OTEL_SERVICE_NAME`, default `nimbus`).
    pub service_name: String,
    pub sampler: Sampler,
    /// Spans waiting for export at most (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048); more
    /// are dropped and counted, never waited for.
    pub max_queue: usize,
    /// Spans per export request at most (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512).
    pub max_batch: usize,
    /// How long a span waits for its batch to fill (`OTEL_BSP_SCHEDULE_DELAY` ms, default 5000).
    pub delay: Duration,
    /// One export request's timeout (`OTEL_EXPORTER_OTLP_TIMEOUT` ms, default 10000).
    pub timeout: Duration,
    /// Headers sent with every export (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,…` with percent-encoded values), such as a
    /// hosted collector's API key. Never logged.
    pub headers: Vec<(String, String)>,
}

impl TraceConfig {
    /// Reads the configuration from the `--otlp-endpoint` flag (a base URL, as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`) and the process environment. `Ok(None)`: no
    /// endpoint configured, tracing off.
    pub fn from_env(flag: Option<&str>) -> Result<Option<Self>, TraceError> {
        Self::from_lookup(flag, |k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`TraceConfig::from_env`] with the variables read through `var`. The traces URL
    /// is `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else the flag or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended (the flag wins over the
    /// variables).
    pub fn from_lookup(
        flag: Option<&str>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TraceError> {
        let base = |b: &str| format!("{}/v1/traces", b.trim_end_matches('/'));
        let traces_url = match flag.filter(|f| !f.is_empty()) {
            Some(f) => base(f),
            None => match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(url) => url,
                None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                    Some(b) => base(&b),
                    None => return Ok(None),
                },
            },
        };
        if !(traces_url.starts_with("http://") || traces_url.starts_with("https://")) {
            return Err(TraceError::Config(format!(
                "the OTLP endpoint {traces_url:?} must be an http:// or https:// URL"
            )));
        }
        let number = |name: &str, default: u64| -> Result<u64, TraceError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| TraceError::Config(format!("{name}={v:?} is not a whole number"))),
            }
        };
        let sampler = Sampler::parse(
            var("OTEL_TRACES_SAMPLER").as_deref(),
            var("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        Ok(Some(TraceConfig {
            traces_url,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "nimbus".into()),
            sampler,
            max_queue: number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?.max(1) as usize,
            max_batch: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.max(1) as usize,
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            timeout: Duration::from_millis(number("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?.max(1)),
            headers: match var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS"))
            {
                Some(h) => parse_headers(&h)?,
                None => Vec::new(),
            },
        }))
    }
}

/// `key=value,key2=value2` (the W3C Baggage form the OTLP exporter specification uses),
/// values percent-decoded. The error names the entry's key, never its value (a secret).
fn parse_headers(list: &str) -> Result<Vec<(String, String)>, TraceError> {
    let mut headers = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (key, value) = entry.split_once('=').ok_or_else(|| {
            TraceError::Config(
                "OTEL_EXPORTER_OTLP_HEADERS: an entry has no '=' (expected key=value,…)".into(),
            )
        })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(TraceError::Config(
                "OTEL_EXPORTER_OTLP_HEADERS: an entry has an empty key".into(),
            ));
        }
        let value = percent_decode(value.trim()).ok_or_else(|| {
            TraceError::Config(format!(
                "OTEL_EXPORTER_OTLP_HEADERS: the value of {key:?} is not valid percent-encoded UTF-8"
            ))
        })?;
        headers.push((key.to_string(), value));
    }
    Ok(headers)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Which new traces are recorded (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// A fraction of trace ids, decided on the id (the same decision on every hop).
    Ratio(f64),
    /// A context that arrives with a decision keeps it; a new trace (or an undecided
    /// one) is decided by the inner sampler. The default: `parentbased_always_on`.
    ParentBased(Root),
}

/// A [`Sampler::ParentBased`] sampler's decision for new traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::ParentBased(Root::AlwaysOn)
    }
}

impl Sampler {
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Self, TraceError> {
        let ratio = || -> Result<f64, TraceError> {
            match arg {
                None => Ok(1.0),
                Some(a) => a
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        TraceError::Config(format!(
                            "OTEL_TRACES_SAMPLER_ARG={a:?} must be a number from 0 to 1"
                        ))
                    }),
            }
        };
        Ok(match name.map(str::trim) {
            None | Some("parentbased_always_on") => Sampler::ParentBased(Root::AlwaysOn),
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::Ratio(ratio()?),
            Some("parentbased_always_off") => Sampler::ParentBased(Root::AlwaysOff),
            Some("parentbased_traceidratio") => Sampler::ParentBased(Root::Ratio(ratio()?)),
            Some(other) => {
                return Err(TraceError::Config(format!(
                    "OTEL_TRACES_SAMPLER={other:?} is not supported: use always_on, always_off, \
                     traceidratio, parentbased_always_on, parentbased_always_off or \
                     parentbased_traceidratio"
                )))
            }
        })
    }

    /// Whether a span of `trace_id` whose parent is `parent` is recorded.
    pub fn decide(&self, parent: Option<&TraceContext>, trace_id: u128) -> bool {
        match *self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::Ratio(r) => by_ratio(r, trace_id),
            Sampler::ParentBased(root) => match parent.and_then(|p| p.sampled) {
                Some(decided) => decided,
                None => match root {
                    Root::AlwaysOn => true,
                    Root::AlwaysOff => false,
                    Root::Ratio(r) => by_ratio(r, trace_id),
                },
            },
        }
    }
}

/// The OpenTelemetry SDK's rule: the trace id's low 63 bits below `ratio` × 2^63.
fn by_ratio(ratio: f64, trace_id: u128) -> bool {
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<TraceConfig>, TraceError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TraceConfig::from_lookup(flag, |k| vars.get(k).cloned())
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(cfg(None, &[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
    }

    #[test]
    fn endpoint_precedence() {
        let c = cfg(Some("http://127.0.0.1:4318/"), &[]).unwrap().unwrap();
        assert_eq!(c.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.service_name, "nimbus");
        assert_eq!(c.sampler, Sampler::ParentBased(Root::AlwaysOn));
        let c = cfg(
            None,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_url, "http://collector:4318/v1/traces");
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:9/custom",
            ),
            ("OTEL_SERVICE_NAME", "edge"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ];
        let c = cfg(None, &vars).unwrap().unwrap();
        assert_eq!(c.traces_url, "http://other:9/custom");
        assert_eq!(c.service_name, "edge");
        assert_eq!(c.sampler, Sampler::ParentBased(Root::Ratio(0.25)));
        assert_eq!(c.delay, Duration::from_millis(100));
        // The flag wins over the variables.
        let c = cfg(Some("http://flag:1"), &vars).unwrap().unwrap();
        assert_eq!(c.traces_url, "http://flag:1/v1/traces");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(cfg(Some("collector:4318"), &[]).is_err());
        let e = |vars: &[(&str, &str)]| cfg(Some("http://c:1"), vars).is_err();
        assert!(e(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]));
        assert!(e(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2")
        ]));
        assert!(e(&[("OTEL_BSP_MAX_QUEUE_SIZE", "many")]));
    }

    #[test]
    fn sampling_decisions() {
        let sampled = TraceContext::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let unsampled = TraceContext::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        );
        let undecided =
            TraceContext::parse_xray("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=?");
        let pb = Sampler::ParentBased(Root::AlwaysOff);
        assert!(pb.decide(sampled.as_ref(), 1));
        assert!(!pb.decide(unsampled.as_ref(), 1));
        assert!(!pb.decide(undecided.as_ref(), 1));
        assert!(!pb.decide(None, 1));
        let on = Sampler::default();
        assert!(on.decide(None, 1));
        assert!(on.decide(undecided.as_ref(), 1));
        assert!(!on.decide(unsampled.as_ref(), 1));
        assert!(Sampler::AlwaysOn.decide(unsampled.as_ref(), 1));
        // Ratio: decided on the id alone, roughly the fraction asked for.
        let r = Sampler::Ratio(0.25);
        let kept = (0..4000u128)
            .filter(|i| r.decide(None, i.wrapping_mul(0x9e3779b97f4a7c15_f39cc0605cedc835)))
            .count();
        assert!((800..1200).contains(&kept), "{kept}");
        assert!(!Sampler::Ratio(0.0).decide(None, u128::MAX));
    }

    #[test]
    fn export_headers_from_the_standard_variables() {
        let c = cfg(
            Some("http://c:4318"),
            &[(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%3Dcret, x-team = core ,",
            )],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.headers,
            [
                ("api-key".to_string(), "s=cret".to_string()),
                ("x-team".to_string(), "core".to_string())
            ]
        );
        // The traces-only variable wins.
        let c = cfg(
            Some("http://c:4318"),
            &[
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.headers, [("b".to_string(), "2".to_string())]);
        for bad in ["novalue", "=v", "k=%zz"] {
            let e = cfg(
                Some("http://c:4318"),
                &[("OTEL_EXPORTER_OTLP_HEADERS", bad)],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{e}");
        }
        let e = cfg(
            Some("http://c:4318"),
            &[("OTEL_EXPORTER_OTLP_HEADERS", "token=%zzsecret")],
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("secret"), "a value is never echoed: {e}");
    }
}
