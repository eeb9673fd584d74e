//! What a source mapping is: the broker side ([`SourceSpec`]) and Lambda's
//! event-source-mapping settings ([`SourceMapping`]).

use crate::error::{Result, SourceError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kinds of broker Nimbus consumes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// PostgreSQL change data capture: logical replication with `pgoutput`.
    Postgres,
    /// NATS JetStream: a durable pull consumer (at least once).
    Nats,
    /// Core NATS subjects: a plain subscription (at most once).
    NatsCore,
    /// RabbitMQ (AMQP 0-9-1): a queue, with manual acknowledgements.
    Rabbitmq,
    /// Redis Streams: a consumer group.
    Redis,
    /// MQTT 3.1.1 / 5: topic filters, persistent session.
    Mqtt,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Postgres,
        Kind::Nats,
        Kind::NatsCore,
        Kind::Rabbitmq,
        Kind::Redis,
        Kind::Mqtt,
    ];

    /// The name in the manifest, the native API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Nats => "nats",
            Kind::NatsCore => "nats-core",
            Kind::Rabbitmq => "rabbitmq",
            Kind::Redis => "redis",
            Kind::Mqtt => "mqtt",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The key of Lambda's `SelfManagedEventSource.Endpoints` that names this kind (as
    /// `KAFKA_BOOTSTRAP_SERVERS` names Kafka).
    pub fn endpoints_key(self) -> &'static str {
        match self {
            Kind::Postgres => "POSTGRES_SERVERS",
            Kind::Nats => "NATS_SERVERS",
            Kind::NatsCore => "NATS_CORE_SERVERS",
            Kind::Rabbitmq => "RABBITMQ_BROKERS",
            Kind::Redis => "REDIS_SERVERS",
            Kind::Mqtt => "MQTT_BROKERS",
        }
    }

    pub fn from_endpoints_key(key: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.endpoints_key() == key)
    }

    /// The URL schemes an endpoint of this kind may use.
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            Kind::Postgres => &["postgres", "postgresql"],
            Kind::Nats | Kind::NatsCore => &["nats", "tls"],
            Kind::Rabbitmq => &["amqp", "amqps"],
            Kind::Redis => &["redis", "rediss"],
            Kind::Mqtt => &["mqtt", "mqtts", "tcp"],
        }
    }

    /// The `eventSource` of its records.
    pub fn event_source(self) -> &'static str {
        match self {
            Kind::Postgres => "nimbus:postgres",
            Kind::Nats | Kind::NatsCore => "nimbus:nats",
            // Lambda's Amazon MQ for RabbitMQ records, unchanged.
            Kind::Rabbitmq => "aws:rmq",
            Kind::Redis => "nimbus:redis",
            Kind::Mqtt => "nimbus:mqtt",
        }
    }

    /// Whether records are processed strictly in order, one batch at a time (a change
    /// stream: a failed batch blocks the ones after it, as Lambda does for streams).
    pub fn ordered(self) -> bool {
        matches!(self, Kind::Postgres)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lambda's `StartingPosition`: where a new durable consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StartingPosition {
    /// Only what arrives after the mapping was created (Lambda's default for streams).
    #[default]
    Latest,
    /// Everything the broker still holds.
    TrimHorizon,
}

/// The broker side of a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    pub kind: Kind,
    /// Broker URLs (`nats://127.0.0.1:4222`, `amqp://127.0.0.1:5672/%2f`,
    /// `redis://127.0.0.1:6379/0`, `mqtt://127.0.0.1:1883`,
    /// `postgres://127.0.0.1:5432/app`). A URL with a password is refused: credentials
    /// come from [`secret`](Self::secret).
    pub endpoints: Vec<String>,
    /// What to consume: NATS subjects, RabbitMQ queues, Redis streams, MQTT topic
    /// filters, PostgreSQL tables (`schema.table` or `table`).
    pub topics: Vec<String>,
    /// The durable name on the broker: the JetStream consumer, the Redis consumer group,
    /// the MQTT client id, the PostgreSQL replication slot. `None`: derived from the
    /// mapping's id (`nimbus_` + the first 12 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// A Nimbus secret holding the credentials: JSON `{"username": …, "password": …}` (the
    /// shape of Lambda's `BASIC_AUTH` secrets) or a bare password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Kind-specific settings, documented per connector in docs/sources.md.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub starting_position: StartingPosition,
}

impl SourceSpec {
    /// The durable name for mapping `uuid`.
    pub fn group_or_default(&self, uuid: &str) -> String {
        self.group.clone().unwrap_or_else(|| default_group(uuid))
    }

    /// An option's value, if set.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    /// A short label for metrics and logs: `kind:first-topic` (no endpoints: they may
    /// name hosts a dashboard should not show, and would multiply series).
    pub fn label(&self) -> String {
        format!(
            "{}:{}",
            self.kind,
            self.topics.first().map(String::as_str).unwrap_or("")
        )
    }

    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(SourceError::Config(format!(
                "a {} source needs at least one endpoint (e.g. {})",
                self.kind,
                example_endpoint(self.kind)
            )));
        }
        for e in &self.endpoints {
            validate_endpoint(self.kind, e)?;
        }
        if self.topics.is_empty() {
            return Err(SourceError::Config(format!(
                "a {} source needs at least one {}",
                self.kind,
                topic_noun(self.kind)
            )));
        }
        for t in &self.topics {
            if t.trim().is_empty() || t.len() > 1024 {
                return Err(SourceError::Config(format!(
                    "invalid {}: {t:?}",
                    topic_noun(self.kind)
                )));
            }
        }
        if self.kind == Kind::Rabbitmq && self.topics.len() != 1 {
            return Err(SourceError::Config(
                "a rabbitmq source consumes exactly one queue".into(),
            ));
        }
        if let Some(g) = &self.group {
            let ok = !g.is_empty()
                && g.len() <= 63
                && g.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(SourceError::Config(format!(
                    "invalid consumer name {g:?}: 1-63 letters, digits, '_' or '-'"
                )));
            }
        }
        if let Some(s) = &self.secret {
            if s.is_empty() || s.len() > 256 {
                return Err(SourceError::Config(format!("invalid secret name {s:?}")));
            }
        }
        for (k, v) in &self.options {
            if k.is_empty() || k.len() > 64 || v.len() > 4096 {
                return Err(SourceError::Config(format!("invalid option {k:?}")));
            }
        }
        Ok(())
    }
}

/// `nimbus_` + the first 12 hex digits of the mapping's id: a valid name for every broker
/// (PostgreSQL slots allow lower-case letters, digits and `_` only).
pub fn default_group(uuid: &str) -> String {
    let hex: String = uuid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("nimbus_{hex}")
}

fn example_endpoint(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => "postgres://127.0.0.1:5432/app",
        Kind::Nats | Kind::NatsCore => "nats://127.0.0.1:4222",
        Kind::Rabbitmq => "amqp://127.0.0.1:5672/%2f",
        Kind::Redis => "redis://127.0.0.1:6379/0",
        Kind::Mqtt => "mqtt://127.0.0.1:1883",
    }
}

fn topic_noun(kind: Kind) -> &'static str {
    match kind {
        Kind::Postgres => "table",
        Kind::Nats | Kind::NatsCore => "subject",
        Kind::Rabbitmq => "queue",
        Kind::Redis => "stream",
        Kind::Mqtt => "topic filter",
    }
}

/// Checks an endpoint URL: a scheme of its kind, a host, and no password.
pub fn validate_endpoint(kind: Kind, url: &str) -> Result<()> {
    let bad = |why: &str| {
        SourceError::Config(format!(
            "invalid {kind} endpoint {}: {why} (e.g. {})",
            redact(url),
            example_endpoint(kind)
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if !kind.schemes().contains(&scheme) {
        return Err(bad(&format!(
            "the scheme must be one of {:?}",
            kind.schemes()
        )));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err(SourceError::Config(format!(
                "the {kind} endpoint {} holds a password: store it in a secret (nimbus secret set NAME) and name the secret instead",
                redact(url)
            )));
        }
    }
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(())
}

/// `url` with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                url.to_string()
            }
        }
        None => url.to_string(),
    }
}

/// Credentials read from the mapping's secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Credentials {
    /// A secret's value: `{"username": …, "password": …}` or a bare password.
    pub fn from_secret(value: &[u8]) -> Credentials {
        let text = String::from_utf8_lossy(value);
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(text.trim()) {
            let get = |k: &str| o.get(k).and_then(|v| v.as_str()).map(str::to_string);
            return Credentials {
                username: get("username"),
                password: get("password"),
            };
        }
        Credentials {
            username: None,
            password: Some(text.trim_end_matches(['\n', '\r']).to_string()),
        }
    }
}

/// Lambda's `DestinationConfig.OnFailure` for a source mapping: where a batch goes when
/// its retries are exhausted (a function, a built-in queue or a bus, by ARN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnFailure {
    pub destination: String,
}

/// One event-source mapping from an external broker to a function, with Lambda's
/// settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMapping {
    pub uuid: String,
    /// `NAME` or `NAME:QUALIFIER`.
    pub function: String,
    pub source: SourceSpec,
    pub enabled: bool,
    /// 1-10,000 records per invocation.
    pub batch_size: u32,
    /// Lambda's `MaximumBatchingWindowInSeconds` (0-300): how long to wait to fill a batch.
    pub window_s: u32,
    /// `FilterCriteria` patterns (EventBridge pattern JSON); a record matching none is
    /// acknowledged without invoking.
    #[serde(default)]
    pub filters: Vec<String>,
    /// `FunctionResponseTypes: ["ReportBatchItemFailures"]`.
    #[serde(default)]
    pub report_batch_item_failures: bool,
    /// -1 (until the record expires) or 0-10,000 retries after the first attempt.
    pub maximum_retry_attempts: i32,
    /// -1 (never) or 60-604,800 seconds.
    pub maximum_record_age_s: i32,
    /// `BisectBatchOnFunctionError`.
    #[serde(default)]
    pub bisect_batch_on_function_error: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// `ScalingConfig.MaximumConcurrency`: batches of this mapping in flight at once
    /// (ordered sources: always 1).
    pub maximum_concurrency: u32,
    /// Epoch seconds.
    pub last_modified_s: i64,
    /// Who manages it: `manifest:FUNCTION:ID` for a manifest's mapping (a later deploy
    /// updates or deletes exactly those); none for one made through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// [`SourceMapping::maximum_concurrency`] when the user did not set one.
pub const DEFAULT_MAXIMUM_CONCURRENCY: u32 = 4;

impl SourceMapping {
    /// A mapping with Lambda's defaults for everything but the function and the source.
    pub fn new(uuid: String, function: String, source: SourceSpec) -> Self {
        Self {
            uuid,
            function,
            source,
            enabled: true,
            batch_size: 100,
            window_s: 0,
            filters: Vec::new(),
            report_batch_item_failures: false,
            maximum_retry_attempts: -1,
            maximum_record_age_s: -1,
            bisect_batch_on_function_error: false,
            on_failure: None,
            maximum_concurrency: DEFAULT_MAXIMUM_CONCURRENCY,
            last_modified_s: 0,
            tag: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.source.validate()?;
        let bad = |m: &str| Err(SourceError::Config(m.to_string()));
        if self.function.is_empty() {
            return bad("a mapping needs a function");
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return bad("BatchSize must be 1-10000");
        }
        if self.window_s > 300 {
            return bad("MaximumBatchingWindowInSeconds must be 0-300");
        }
        if !(-1..=10_000).contains(&self.maximum_retry_attempts) {
            return bad("MaximumRetryAttempts must be -1 (until the record expires) or 0-10000");
        }
        if self.maximum_record_age_s != -1 && !(60..=604_800).contains(&self.maximum_record_age_s) {
            return bad("MaximumRecordAgeInSeconds must be -1 (never) or 60-604800");
        }
        if !(1..=1000).contains(&self.maximum_concurrency) {
            return bad("ScalingConfig.MaximumConcurrency must be 1-1000");
        }
        if let Some(t) = &self.tag {
            if t.is_empty() || t.len() > 256 {
                return bad("a tag is 1-256 characters");
            }
        }
        if let Some(d) = &self.on_failure {
            if d.destination.is_empty() {
                return bad("DestinationConfig.OnFailure needs a Destination ARN");
            }
        }
        Ok(())
    }

    /// `Enabled` or `Disabled`, as Lambda reports `State`.
    pub fn state(&self) -> &'static str {
        if self.enabled {
            "Enabled"
        } else {
            "Disabled"
        }
    }

    /// Batches in flight at once: 1 for ordered sources.
    pub fn concurrency(&self) -> usize {
        if self.source.kind.ordered() {
            1
        } else {
            self.maximum_concurrency.max(1) as usize
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind, endpoint: &str) -> SourceSpec {
        SourceSpec {
            kind,
            endpoints: vec![endpoint.into()],
            topics: vec!["t".into()],
            group: None,
            secret: None,
            options: BTreeMap::new(),
            starting_position: StartingPosition::Latest,
        }
    }

    #[test]
    fn endpoints_refuse_passwords_and_wrong_schemes() {
        assert!(spec(Kind::Nats, "nats://127.0.0.1:4222").validate().is_ok());
        assert!(spec(Kind::Rabbitmq, "amqp://guest@127.0.0.1:5672/%2f")
            .validate()
            .is_ok());
        let e = spec(Kind::Rabbitmq, "amqp://guest:guest@127.0.0.1:5672/%2f")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds a password") && !e.contains(":guest@"),
            "{e}"
        );
        assert!(e.contains("guest:***@"), "{e}");
        let e = spec(Kind::Redis, "nats://127.0.0.1")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("scheme"), "{e}");
        assert!(spec(Kind::Mqtt, "mqtt://").validate().is_err());
        assert!(spec(Kind::Postgres, "127.0.0.1:5432").validate().is_err());
    }

    #[test]
    fn secrets_hold_json_or_a_bare_password() {
        let c = Credentials::from_secret(br#"{"username":"u","password":"p"}"#);
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_deref(), Some("p"));
        let c = Credentials::from_secret(b"s3cret\n");
        assert_eq!((c.username, c.password.as_deref()), (None, Some("s3cret")));
        assert!(!format!("{:?}", Credentials::from_secret(b"s3cret")).contains("s3cret"));
    }

    #[test]
    fn mapping_settings_are_checked() {
        let ok = SourceMapping::new(
            "0f3c2a1b-aaaa".into(),
            "f".into(),
            spec(Kind::Nats, "nats://h"),
        );
        assert!(ok.validate().is_ok());
        for change in [
            |m: &mut SourceMapping| m.batch_size = 0,
            |m: &mut SourceMapping| m.window_s = 301,
            |m: &mut SourceMapping| m.maximum_retry_attempts = -2,
            |m: &mut SourceMapping| m.maximum_record_age_s = 59,
            |m: &mut SourceMapping| m.maximum_concurrency = 0,
            |m: &mut SourceMapping| m.source.topics.clear(),
            |m: &mut SourceMapping| m.source.group = Some("has space".into()),
        ] {
            let mut m = ok.clone();
            change(&mut m);
            assert!(m.validate().is_err(), "{m:?}");
        }
        assert_eq!(default_group("0f3c2a1b-aaaa-bbbb"), "nimbus_0f3c2a1baaaa");
        assert_eq!(Kind::parse("nats-core"), Some(Kind::NatsCore));
        assert_eq!(
            Kind::from_endpoints_key("RABBITMQ_BROKERS"),
            Some(Kind::Rabbitmq)
        );
    }
}
