//! The five brokers as `nimbus-bench --sources` drives them (see [`crate::sources_bench`]):
//! the place a phase publishes to (a table, stream, queue or topic with a random name,
//! removed afterwards), the publisher, and the **floor** consumer — the same client crate
//! the connector uses, reading the same place directly, without Nimbus.
//!
//! Every record is a short text payload `TAG:INDEX`; each side notes the wall-clock time
//! (milliseconds, microsecond resolution) when a record was published and when it was
//! consumed.

use anyhow::{bail, Context, Result};
use futures_util::{FutureExt, StreamExt};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

const POSTGRES: &str = "127.0.0.1:5432";
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const NATS: &str = "127.0.0.1:4222";
const RABBITMQ: &str = "127.0.0.1:5672";
const REDIS: &str = "127.0.0.1:6379";
/// Rows per `INSERT` (one transaction) when PostgreSQL is published to in bulk.
const PG_ROWS_PER_COMMIT: usize = 100;
/// `XADD`s per pipelined round trip when Redis is published to in bulk.
const REDIS_PIPELINE: usize = 100;
/// RabbitMQ floor consumer's prefetch: the largest batch × the mappings' default concurrency.
const RABBIT_PREFETCH: u16 = 400;
/// The PostgreSQL floor's pause between two empty reads of its slot.
pub const PG_FLOOR_NAP: Duration = Duration::from_millis(1);

/// The brokers, as `--sources-only` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// PostgreSQL logical replication (change data capture).
    #[value(alias = "postgres")]
    Pg,
    /// NATS JetStream.
    Nats,
    /// RabbitMQ.
    #[value(alias = "rabbit")]
    Rabbitmq,
    /// Redis Streams.
    Redis,
    /// MQTT (a private Mosquitto the bench starts).
    Mqtt,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Pg,
        Kind::Nats,
        Kind::Rabbitmq,
        Kind::Redis,
        Kind::Mqtt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pg => "postgres",
            Kind::Nats => "nats",
            Kind::Rabbitmq => "rabbitmq",
            Kind::Redis => "redis",
            Kind::Mqtt => "mqtt",
        }
    }

    /// The short tag that starts this kind's payloads.
    fn letter(self) -> char {
        match self {
            Kind::Pg => 'p',
            Kind::Nats => 'n',
            Kind::Rabbitmq => 'q',
            Kind::Redis => 'r',
            Kind::Mqtt => 'm',
        }
    }
}

/// The wall clock in milliseconds (microsecond resolution).
pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

/// A short random suffix for names that must not collide between phases, runs and tests.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:010x}", rand_u64() & 0xff_ffff_ffff)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// When each payload was first consumed (wall ms), and how many came again.
#[derive(Default)]
pub struct Seen {
    pub at: HashMap<String, f64>,
    pub duplicates: usize,
}

impl Seen {
    pub fn note(&mut self, payload: String, t: f64) {
        match self.at.entry(payload) {
            std::collections::hash_map::Entry::Occupied(_) => self.duplicates += 1,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(t);
            }
        }
    }
}

pub type SharedSeen = Arc<Mutex<Seen>>;

/// What the whole benchmark shares: the private Mosquitto.
pub struct Env {
    pub mqtt_port: Option<u16>,
    _mosquitto: Option<Mosquitto>,
}

impl Env {
    /// Checks that every broker of `kinds` answers (PostgreSQL made logical first, with the
    /// script CI and the tests use), and starts the private Mosquitto for MQTT.
    pub fn prepare(kinds: &[Kind], tmp: &Path) -> Result<Env> {
        for &k in kinds {
            let (addr, start) = match k {
                Kind::Pg => (
                    POSTGRES,
                    "pg_ctlcluster --skip-systemctl-redirect 15 main start",
                ),
                Kind::Nats => (
                    NATS,
                    "nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server",
                ),
                Kind::Rabbitmq => (RABBITMQ, "rabbitmq-server -detached"),
                Kind::Redis => (
                    REDIS,
                    "redis-server --daemonize yes --bind 127.0.0.1 --port 6379",
                ),
                Kind::Mqtt => continue,
            };
            require(k.name(), addr, start)?;
        }
        if kinds.contains(&Kind::Pg) {
            ensure_logical_postgres()?;
        }
        let mosquitto = if kinds.contains(&Kind::Mqtt) {
            Some(Mosquitto::start(&tmp.join("mosquitto"))?)
        } else {
            None
        };
        Ok(Env {
            mqtt_port: mosquitto.as_ref().map(|m| m.port),
            _mosquitto: mosquitto,
        })
    }

    fn mqtt_port(&self) -> Result<u16> {
        self.mqtt_port
            .context("the private Mosquitto is not running")
    }
}

fn require(service: &str, addr: &str, start: &str) -> Result<()> {
    let ok = addr
        .parse()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).ok())
        .is_some();
    if !ok {
        bail!(
            "{service} is not running at {addr}: --sources measures the real broker. Start it \
             with `{start}`, or leave it out with --sources-only"
        );
    }
    Ok(())
}

/// Runs `.ci/postgres-logical` (idempotent: restarts the cluster only when `wal_level` is
/// not yet `logical`) under the lock the tests take around it.
fn ensure_logical_postgres() -> Result<()> {
    let script = [
        PathBuf::from(".ci/postgres-logical"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/postgres-logical"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .context(
        "PostgreSQL must do logical decoding (wal_level = logical) and .ci/postgres-logical, \
         which sets it, was not found: run the bench from the repository root, set \
         wal_level = logical yourself, or leave postgres out with --sources-only",
    )?;
    let lock = std::env::temp_dir().join("nimbus-postgres-logical.lock");
    let out = std::process::Command::new("flock")
        .arg(&lock)
        .arg("bash")
        .arg(&script)
        .output()
        .with_context(|| {
            format!(
                "cannot run flock {} bash {}",
                lock.display(),
                script.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{} could not make PostgreSQL logical (leave it out with --sources-only): {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A Mosquitto of the bench's own on a free port: the shared broker keeps at most 1,000
/// messages per session (`max_queued_messages`) and drops QoS 1 messages beyond that,
/// which a burst to a batch-size-1 mapping exceeds; docs/sources.md asks for
/// `max_queued_messages 0` for bursts, so this one has it. Killed when dropped.
struct Mosquitto {
    port: u16,
    child: std::process::Child,
}

impl Mosquitto {
    fn start(dir: &Path) -> Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let port = crate::targets::free_addr()?.port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\n"
            ),
        )?;
        let mut child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("mosquitto.log"))?)
            .spawn()
            .context("cannot start mosquitto (apt-get install mosquitto), or leave MQTT out with --sources-only")?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "mosquitto exited with {status}: {}",
                    std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the bench's mosquitto did not listen on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Mosquitto { port, child })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn pg_connect() -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(POSTGRES_URL, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {POSTGRES_URL}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn nats_js() -> Result<async_nats::jetstream::Context> {
    let client = async_nats::connect(format!("nats://{NATS}"))
        .await
        .with_context(|| format!("cannot connect to NATS at {NATS}"))?;
    Ok(async_nats::jetstream::new(client))
}

async fn rabbit_channel() -> Result<(lapin::Connection, lapin::Channel)> {
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{RABBITMQ}/%2f"),
        lapin::ConnectionProperties::default(),
    )
    .await
    .with_context(|| format!("cannot connect to RabbitMQ at {RABBITMQ}"))?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}

async fn redis_conn() -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{REDIS}/0"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to Redis at {REDIS}"))
}

/// Where one phase's records go: a fresh table, stream, queue or topic.
pub struct Place {
    pub kind: Kind,
    /// Table, JetStream stream, queue, Redis stream, or MQTT topic.
    pub name: String,
    /// The NATS subject.
    subject: String,
    /// The payloads' tag (unique per place).
    pub tag: String,
}

impl Place {
    /// Makes the place on its broker.
    pub async fn create(kind: Kind, env: &Env) -> Result<Place> {
        let id = unique("");
        let tag = format!("{}{}", kind.letter(), &id[..6]);
        let mut place = Place {
            kind,
            name: String::new(),
            subject: String::new(),
            tag,
        };
        match kind {
            Kind::Pg => {
                place.name = format!("nimbus_bench_{id}");
                let c = pg_connect().await?;
                c.batch_execute(&format!(
                    "CREATE TABLE {} (id bigserial PRIMARY KEY, m text NOT NULL)",
                    place.name
                ))
                .await
                .context("create the table")?;
            }
            Kind::Nats => {
                place.name = format!("NIMBUS_BENCH_{id}");
                place.subject = format!("nimbus_bench_{id}.events");
                nats_js()
                    .await?
                    .create_stream(async_nats::jetstream::stream::Config {
                        name: place.name.clone(),
                        subjects: vec![format!("nimbus_bench_{id}.>")],
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| anyhow::anyhow!("create stream {}: {e}", place.name))?;
            }
            Kind::Rabbitmq => {
                place.name = format!("nimbus-bench-{id}");
                let (conn, ch) = rabbit_channel().await?;
                ch.queue_declare(
                    place.name.as_str().into(),
                    lapin::options::QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    Default::default(),
                )
                .await
                .context("declare the queue")?;
                let _ = conn.close(200, "done".into()).await;
            }
            Kind::Redis => place.name = format!("nimbus-bench-{id}"),
            Kind::Mqtt => {
                env.mqtt_port()?;
                place.name = format!("nimbus-bench/{id}/r");
            }
        }
        Ok(place)
    }

    /// The Lambda `CreateEventSourceMapping` fields naming this place
    /// (`SelfManagedEventSource`, `Topics` or `Queues`, options, the durable name).
    pub fn mapping(&self, env: &Env) -> Result<Value> {
        Ok(match self.kind {
            Kind::Pg => json!({
                "SelfManagedEventSource": {"Endpoints": {"POSTGRES_SERVERS": [POSTGRES_URL]}},
                "Topics": [self.name],
                // The slot and publication are named after the table, so removing the
                // place drops them even if the mapping's deletion did not.
                "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": self.name},
            }),
            Kind::Nats => json!({
                "SelfManagedEventSource": {"Endpoints": {"NATS_SERVERS": [format!("nats://{NATS}")]}},
                "Topics": [self.subject],
                "SourceAccessConfigurations": [{"Type": "OPTION", "URI": format!("stream={}", self.name)}],
            }),
            Kind::Rabbitmq => json!({
                "SelfManagedEventSource": {"Endpoints": {"RABBITMQ_BROKERS": [format!("amqp://{RABBITMQ}/%2f")]}},
                "Queues": [self.name],
            }),
            Kind::Redis => json!({
                "SelfManagedEventSource": {"Endpoints": {"REDIS_SERVERS": [format!("redis://{REDIS}/0")]}},
                "Topics": [self.name],
                "SourceAccessConfigurations": [{"Type": "OPTION", "URI": "create=true"}],
            }),
            Kind::Mqtt => json!({
                "SelfManagedEventSource": {"Endpoints": {"MQTT_BROKERS": [format!("mqtt://127.0.0.1:{}", env.mqtt_port()?)]}},
                "Topics": [self.name],
            }),
        })
    }

    /// Removes what the place left on its broker (errors are reported, not fatal).
    pub async fn remove(&self) {
        let r: Result<()> = async {
            match self.kind {
                Kind::Pg => {
                    let c = pg_connect().await?;
                    // Slots of the mapping (named after the table) and of the floor; the
                    // backend of a mapping just deleted may hold its slot a moment longer.
                    for slot in [self.name.clone(), format!("{}_f", self.name)] {
                        drop_pg_slot(&c, &slot).await?;
                    }
                    c.batch_execute(&format!(
                        "DROP PUBLICATION IF EXISTS {0}; DROP PUBLICATION IF EXISTS {0}_f; \
                         DROP TABLE IF EXISTS {0}",
                        self.name
                    ))
                    .await?;
                }
                Kind::Nats => {
                    nats_js()
                        .await?
                        .delete_stream(&self.name)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                Kind::Rabbitmq => {
                    let (conn, ch) = rabbit_channel().await?;
                    ch.queue_delete(self.name.as_str().into(), Default::default())
                        .await?;
                    let _ = conn.close(200, "done".into()).await;
                }
                Kind::Redis => {
                    let mut c = redis_conn().await?;
                    let _: i64 = redis::cmd("DEL")
                        .arg(&self.name)
                        .query_async(&mut c)
                        .await?;
                }
                Kind::Mqtt => {}
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            eprintln!(
                "warning: could not remove {} {}: {e:#}",
                self.kind.name(),
                self.name
            );
        }
    }
}

/// Drops `slot` if it exists, waiting (up to 10 s) for a backend still holding it.
async fn drop_pg_slot(c: &tokio_postgres::Client, slot: &str) -> Result<()> {
    for _ in 0..100 {
        let rows = c
            .query(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        match rows.first().map(|r| r.get::<_, bool>(0)) {
            None => return Ok(()),
            Some(false) => {
                c.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await?;
                return Ok(());
            }
            Some(true) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    bail!("replication slot {slot} is still active after 10 s; drop it by hand")
}

/// A client publishing to one place.
pub enum Publisher {
    Pg(tokio_postgres::Client, String),
    Nats(async_nats::jetstream::Context, String),
    Rabbit(lapin::Connection, lapin::Channel, String),
    Redis(redis::aio::MultiplexedConnection, String),
    Mqtt(MqttPub),
}

/// An MQTT 5 client publishing with QoS 1; its event loop counts the PUBACKs.
pub struct MqttPub {
    client: v5::AsyncClient,
    topic: String,
    acked: Arc<AtomicU64>,
    sent: u64,
    failed: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl MqttPub {
    async fn connect(port: u16, topic: &str) -> Result<MqttPub> {
        let mut o = v5::MqttOptions::new(unique("bench-pub-"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = v5::AsyncClient::new(o, 1000);
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(None));
        let (a, f) = (acked.clone(), failed.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match events.poll().await {
                    Ok(v5::Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(v5::Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        *f.lock().unwrap() = Some(e.to_string());
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .context("no CONNACK from mosquitto within 10 s")?
            .context("the MQTT publisher's connection failed")?;
        Ok(MqttPub {
            client,
            topic: topic.to_string(),
            acked,
            sent: 0,
            failed,
            task,
        })
    }

    async fn send(&mut self, payload: &str) -> Result<()> {
        self.client
            .publish(
                self.topic.clone(),
                QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .await?;
        self.sent += 1;
        Ok(())
    }

    /// Waits until every publish so far has its PUBACK.
    async fn all_acked(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked.load(Ordering::SeqCst) < self.sent {
            if let Some(e) = self.failed.lock().unwrap().clone() {
                bail!("MQTT publisher: {e}");
            }
            if Instant::now() > deadline {
                bail!("MQTT publisher: PUBACKs missing after 60 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        Ok(())
    }
}

impl Publisher {
    pub async fn connect(place: &Place, env: &Env) -> Result<Publisher> {
        Ok(match place.kind {
            Kind::Pg => Publisher::Pg(pg_connect().await?, place.name.clone()),
            Kind::Nats => Publisher::Nats(nats_js().await?, place.subject.clone()),
            Kind::Rabbitmq => {
                let (conn, ch) = rabbit_channel().await?;
                ch.confirm_select(Default::default()).await?;
                Publisher::Rabbit(conn, ch, place.name.clone())
            }
            Kind::Redis => Publisher::Redis(redis_conn().await?, place.name.clone()),
            Kind::Mqtt => Publisher::Mqtt(MqttPub::connect(env.mqtt_port()?, &place.name).await?),
        })
    }

    /// Publishes one record and waits for the broker's acknowledgement (the commit, the
    /// publish ack, the confirm, the reply, the PUBACK); returns when it was published.
    pub async fn one(&mut self, payload: &str) -> Result<f64> {
        let t = wall_ms();
        match self {
            Publisher::Pg(c, table) => {
                c.batch_execute(&format!("INSERT INTO {table} (m) VALUES ('{payload}')"))
                    .await?;
            }
            Publisher::Nats(js, subject) => {
                js.publish(subject.clone(), payload.to_string().into())
                    .await?
                    .await?;
            }
            Publisher::Rabbit(_, ch, queue) => {
                rabbit_publish(ch, queue, payload).await?.await?;
            }
            Publisher::Redis(c, stream) => {
                let _: String = redis::cmd("XADD")
                    .arg(&*stream)
                    .arg("*")
                    .arg("m")
                    .arg(payload)
                    .query_async(c)
                    .await?;
            }
            Publisher::Mqtt(m) => {
                m.send(payload).await?;
                m.all_acked().await?;
            }
        }
        Ok(t)
    }

    /// Publishes `payloads` as fast as the client goes: PostgreSQL 100 rows per `INSERT`
    /// (one transaction each), Redis 100 `XADD`s per pipelined round trip, the others one
    /// publish per record with every acknowledgement awaited at the end. Returns each
    /// record's publish time (the moment its publish call, or its statement, started).
    pub async fn burst(&mut self, payloads: &[String]) -> Result<Vec<f64>> {
        let mut times = Vec::with_capacity(payloads.len());
        match self {
            Publisher::Pg(c, table) => {
                for chunk in payloads.chunks(PG_ROWS_PER_COMMIT) {
                    let values: Vec<String> = chunk.iter().map(|p| format!("('{p}')")).collect();
                    let t = wall_ms();
                    times.extend(std::iter::repeat_n(t, chunk.len()));
                    c.batch_execute(&format!(
                        "INSERT INTO {table} (m) VALUES {}",
                        values.join(",")
                    ))
                    .await?;
                }
            }
            Publisher::Nats(js, subject) => {
                let mut acks = Vec::with_capacity(payloads.len());
                for p in payloads {
                    times.push(wall_ms());
                    acks.push(js.publish(subject.clone(), p.clone().into()).await?);
                }
                for a in acks {
                    a.await?;
                }
            }
            Publisher::Rabbit(_, ch, queue) => {
                let mut confirms = Vec::with_capacity(payloads.len());
                for p in payloads {
                    times.push(wall_ms());
                    confirms.push(rabbit_publish(ch, queue, p).await?);
                }
                for c in confirms {
                    c.await?;
                }
            }
            Publisher::Redis(c, stream) => {
                for chunk in payloads.chunks(REDIS_PIPELINE) {
                    let mut pipe = redis::pipe();
                    for p in chunk {
                        pipe.cmd("XADD").arg(&*stream).arg("*").arg("m").arg(p);
                    }
                    let t = wall_ms();
                    times.extend(std::iter::repeat_n(t, chunk.len()));
                    let _: Vec<String> = pipe.query_async(c).await?;
                }
            }
            Publisher::Mqtt(m) => {
                for p in payloads {
                    times.push(wall_ms());
                    m.send(p).await?;
                }
                m.all_acked().await?;
            }
        }
        Ok(times)
    }

    pub async fn close(self) {
        match self {
            Publisher::Rabbit(conn, _, _) => {
                let _ = conn.close(200, "done".into()).await;
            }
            Publisher::Mqtt(m) => {
                let _ = m.client.disconnect().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), m.task).await;
            }
            _ => {}
        }
    }
}

/// A persistent message to `queue` through the default exchange.
async fn rabbit_publish(
    ch: &lapin::Channel,
    queue: &str,
    payload: &str,
) -> Result<lapin::PublisherConfirm> {
    Ok(ch
        .basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            payload.as_bytes(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await?)
}

/// The floor: a consumer reading the place directly, noting when each payload arrived.
/// It runs on a thread of its own with its own Tokio runtime (the bench's runtime has one
/// thread, which the publisher uses), as a consumer process of its own would.
pub struct FloorConsumer {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<Result<()>>,
}

/// What the floor's thread needs to know of the place.
#[derive(Clone)]
struct Target {
    kind: Kind,
    name: String,
    mqtt_port: Option<u16>,
}

impl FloorConsumer {
    /// Subscribes (or creates the slot, consumer or group) and starts consuming; returns
    /// once anything published from now on will be consumed.
    ///
    /// - PostgreSQL: a `pgoutput` logical slot and a publication of the table, read with
    ///   `pg_logical_slot_get_binary_changes` in a loop (pausing [`PG_FLOOR_NAP`] after an
    ///   empty read); the time is when the read returned.
    /// - NATS: a durable pull consumer with explicit acks (`messages()`: async-nats keeps
    ///   pull requests outstanding), each message acked.
    /// - RabbitMQ: `basic.consume` with manual acks and a prefetch of 400; the deliveries the
    ///   client holds are acknowledged at once (`multiple`).
    /// - Redis: a consumer group, `XREADGROUP COUNT 100 BLOCK 100` in a loop, then `XACK`.
    /// - MQTT: an MQTT 5 subscription with QoS 1 (the client acknowledges each message).
    pub async fn start(place: &Place, env: &Env, seen: SharedSeen) -> Result<FloorConsumer> {
        let target = Target {
            kind: place.kind,
            name: place.name.clone(),
            mqtt_port: env.mqtt_port,
        };
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("floor".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(consume(target, seen, stop_rx, ready_tx))
            })?;
        let c = FloorConsumer { stop, thread };
        match tokio::time::timeout(Duration::from_secs(30), ready_rx).await {
            Ok(Ok(())) => Ok(c),
            Ok(Err(_)) => match c.stop().await {
                Err(e) => Err(e.context("starting the floor consumer")),
                Ok(()) => bail!("the floor consumer ended while starting"),
            },
            Err(_) => bail!("the floor consumer did not start within 30 s"),
        }
    }

    /// Stops consuming; fails with the consumer's error if it had one.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.thread.is_finished() {
            if Instant::now() > deadline {
                bail!("the floor consumer did not stop within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match self.thread.join() {
            Ok(r) => r,
            Err(_) => bail!("the floor consumer panicked"),
        }
    }

    /// Whether the consumer ended (on an error) before being stopped.
    pub fn finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// The floor consumer's thread: sets up, says it is ready, consumes until stopped.
async fn consume(
    target: Target,
    seen: SharedSeen,
    mut stop: tokio::sync::watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<()> {
    let stream = target.name.clone();
    match target.kind {
        Kind::Pg => {
            let c = pg_connect().await?;
            let (slot, publication) = (format!("{stream}_f"), format!("{stream}_f"));
            c.batch_execute(&format!(
                "CREATE PUBLICATION {publication} FOR TABLE {stream}"
            ))
            .await
            .context("create the floor's publication")?;
            c.execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            )
            .await
            .context("create the floor's slot")?;
            let _ = ready.send(());
            let sql = "SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL, \
                       'proto_version', '1', 'publication_names', $2)";
            while !*stop.borrow() {
                let rows = c.query(sql, &[&slot, &publication]).await?;
                let t = wall_ms();
                let any = {
                    let mut s = seen.lock().unwrap();
                    let mut any = false;
                    for r in &rows {
                        let data: &[u8] = r.get(0);
                        if let Some(m) = pgoutput_insert_column(data, 1) {
                            s.note(m, t);
                            any = true;
                        }
                    }
                    any
                };
                if !any {
                    tokio::time::sleep(PG_FLOOR_NAP).await;
                }
            }
        }
        Kind::Nats => {
            let js = nats_js().await?;
            let s = js
                .get_stream(&stream)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let consumer = s
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some("floor".into()),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ..Default::default()
                })
                .await
                .map_err(|e| anyhow::anyhow!("create the floor's consumer: {e}"))?;
            let mut msgs = consumer
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let _ = ready.send(());
            loop {
                let m = tokio::select! {
                    _ = stop.changed() => break,
                    m = msgs.next() => m,
                };
                let Some(m) = m else {
                    bail!("the JetStream message stream ended")
                };
                let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
                let t = wall_ms();
                seen.lock()
                    .unwrap()
                    .note(String::from_utf8_lossy(&m.payload).into_owned(), t);
                m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Kind::Rabbitmq => {
            let (conn, ch) = rabbit_channel().await?;
            ch.basic_qos(RABBIT_PREFETCH, Default::default()).await?;
            let mut consumer = ch
                .basic_consume(
                    stream.as_str().into(),
                    "floor".into(),
                    Default::default(),
                    Default::default(),
                )
                .await?;
            let _ = ready.send(());
            loop {
                let d = tokio::select! {
                    _ = stop.changed() => break,
                    d = consumer.next() => d,
                };
                let Some(d) = d else {
                    bail!("RabbitMQ cancelled the floor's consumer")
                };
                let mut last = d?;
                let t = wall_ms();
                let mut got = vec![String::from_utf8_lossy(&last.data).into_owned()];
                // What the client already holds, then one ack for all of it.
                while let Some(Some(d)) = consumer.next().now_or_never() {
                    last = d?;
                    got.push(String::from_utf8_lossy(&last.data).into_owned());
                }
                {
                    let mut s = seen.lock().unwrap();
                    got.into_iter().for_each(|m| s.note(m, t));
                }
                last.ack(lapin::options::BasicAckOptions { multiple: true })
                    .await?;
            }
            let _ = conn.close(200, "done".into()).await;
        }
        Kind::Redis => {
            let mut c = redis_conn().await?;
            let _: String = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg("floor")
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await
                .context("create the floor's group")?;
            let _ = ready.send(());
            while !*stop.borrow() {
                let reply: redis::Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("floor")
                    .arg("c")
                    .arg("COUNT")
                    .arg(100)
                    .arg("BLOCK")
                    .arg(100)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut c)
                    .await?;
                let t = wall_ms();
                let entries = redis_entries(&reply);
                if entries.is_empty() {
                    continue;
                }
                let mut ack = redis::cmd("XACK");
                ack.arg(&stream).arg("floor");
                {
                    let mut s = seen.lock().unwrap();
                    for (id, m) in entries {
                        s.note(m, t);
                        ack.arg(id);
                    }
                }
                let _: i64 = ack.query_async(&mut c).await?;
            }
        }
        Kind::Mqtt => {
            let port = target
                .mqtt_port
                .context("the private Mosquitto is not running")?;
            let mut o = v5::MqttOptions::new(unique("bench-floor-"), "127.0.0.1", port);
            o.set_keep_alive(Duration::from_secs(30));
            let (client, mut events) = v5::AsyncClient::new(o, 1000);
            client.subscribe(stream.clone(), QoS::AtLeastOnce).await?;
            let mut ready = Some(ready);
            loop {
                let ev = tokio::select! {
                    _ = stop.changed() => break,
                    ev = events.poll() => ev,
                };
                match ev? {
                    v5::Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    v5::Event::Incoming(Packet::Publish(p)) => {
                        let t = wall_ms();
                        seen.lock()
                            .unwrap()
                            .note(String::from_utf8_lossy(&p.payload).into_owned(), t);
                    }
                    _ => {}
                }
            }
            let _ = client.try_disconnect();
        }
    }
    Ok(())
}

/// Column `col` (0-based) of a `pgoutput` Insert message as text (`None` for any other
/// message). Format: `'I'`, relation OID (4), `'N'`, column count (2), then per column a
/// kind byte (`'t'` text: length (4) and bytes; `'n'` null; `'u'` unchanged TOAST).
fn pgoutput_insert_column(data: &[u8], col: usize) -> Option<String> {
    if data.first() != Some(&b'I') || data.get(5) != Some(&b'N') {
        return None;
    }
    let n = u16::from_be_bytes(data.get(6..8)?.try_into().ok()?) as usize;
    let mut at = 8;
    for i in 0..n {
        match data.get(at)? {
            b't' | b'b' => {
                let len = u32::from_be_bytes(data.get(at + 1..at + 5)?.try_into().ok()?) as usize;
                let bytes = data.get(at + 5..at + 5 + len)?;
                if i == col {
                    return Some(String::from_utf8_lossy(bytes).into_owned());
                }
                at += 5 + len;
            }
            _ => {
                if i == col {
                    return None;
                }
                at += 1;
            }
        }
    }
    None
}

/// `(id, m)` of every entry in an `XREADGROUP` reply (one stream): `[[stream, [[id,
/// [field, value, …]], …]]]` (RESP2) or a map (RESP3).
fn redis_entries(v: &redis::Value) -> Vec<(String, String)> {
    use redis::Value as V;
    let text = |v: &V| match v {
        V::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        V::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let per_stream: Vec<&V> = match v {
        V::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                V::Array(pair) => pair.get(1),
                _ => None,
            })
            .collect(),
        V::Map(m) => m.iter().map(|(_, e)| e).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in per_stream {
        let V::Array(entries) = entries else { continue };
        for e in entries {
            let V::Array(e) = e else { continue };
            let (Some(id), Some(V::Array(fields))) = (e.first().and_then(text), e.get(1)) else {
                continue;
            };
            let m = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(text).as_deref() == Some("m"))
                .and_then(|kv| kv.get(1).and_then(text));
            if let Some(m) = m {
                out.push((id, m));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_text_column_of_a_pgoutput_insert() {
        let mut msg = vec![b'I', 0, 0, 0x40, 0x01, b'N', 0, 2];
        msg.extend([b't', 0, 0, 0, 2]);
        msg.extend(b"17");
        msg.extend([b't', 0, 0, 0, 5]);
        msg.extend(b"p1:42");
        assert_eq!(pgoutput_insert_column(&msg, 1).as_deref(), Some("p1:42"));
        assert_eq!(pgoutput_insert_column(&msg, 0).as_deref(), Some("17"));
        assert_eq!(pgoutput_insert_column(b"B\0\0", 1), None);
    }

    #[test]
    fn reads_xreadgroup_entries() {
        use redis::Value as V;
        let b = |s: &str| V::BulkString(s.as_bytes().to_vec());
        let reply = V::Array(vec![V::Array(vec![
            b("s"),
            V::Array(vec![V::Array(vec![
                b("1-0"),
                V::Array(vec![b("m"), b("x:1")]),
            ])]),
        ])]);
        assert_eq!(redis_entries(&reply), vec![("1-0".into(), "x:1".into())]);
        assert!(redis_entries(&V::Nil).is_empty());
    }
}
