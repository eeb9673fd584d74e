//! Clients of the machine's real brokers for the source tests: they publish what the
//! mappings consume and read what the brokers hold. Every helper panics loudly, naming
//! the service, its address and how to start it, when the service is not running: a
//! missing service fails the test, never skips it.

use serde_json::Value;
use std::net::TcpStream;
use std::time::Duration;

pub const POSTGRES: &str = "127.0.0.1:5432";
pub const NATS: &str = "127.0.0.1:4222";
pub const RABBITMQ: &str = "127.0.0.1:5672";
pub const REDIS: &str = "127.0.0.1:6379";
pub const MQTT: &str = "127.0.0.1:1883";

/// Panics unless `addr` accepts TCP connections.
pub fn require(service: &str, addr: &str, start: &str) {
    let ok = addr
        .parse()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).ok())
        .is_some();
    assert!(
        ok,
        "{service} is not running at {addr}: these tests need the real service. Start it with: {start}"
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A short random suffix for names that must not collide between tests and runs.
pub fn unique(prefix: &str) -> String {
    let n: u64 = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    format!("{prefix}{:x}", n & 0xff_ffff_ffff)
}

// ------------------------------------------------------------------ PostgreSQL

/// Makes the machine's PostgreSQL able to do logical decoding (`wal_level = logical`) with
/// the same idempotent script CI runs (`.ci/postgres-logical`), so the README's test command
/// needs no setup step of its own. The script restarts the server only when the level is
/// not yet logical; it runs under an exclusive file lock, and every test that needs logical
/// decoding on the shared server calls this before using it, so no test is using the
/// server when it restarts. (Logical is a superset of the default `replica` level: nothing
/// else on the server changes.)
pub fn ensure_logical_postgres() {
    require(
        "PostgreSQL",
        POSTGRES,
        "pg_ctlcluster --skip-systemctl-redirect 15 main start",
    );
    let lock = std::fs::File::create(std::env::temp_dir().join("nimbus-postgres-logical.lock"))
        .expect("create the PostgreSQL setup lock file");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the PostgreSQL setup");
    let script = crate::repo_root().join(".ci/postgres-logical");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("run .ci/postgres-logical");
    assert!(
        out.status.success(),
        "{} could not make PostgreSQL logical: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A connection to the local PostgreSQL's `test` database as `postgres`.
pub struct Pg {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Pg {
    pub fn connect() -> Pg {
        Pg::connect_to("postgres://postgres@127.0.0.1:5432/test")
    }

    pub fn connect_to(url: &str) -> Pg {
        require(
            "PostgreSQL",
            POSTGRES,
            "pg_ctlcluster --skip-systemctl-redirect 15 main start",
        );
        let rt = rt();
        let (client, conn) = rt
            .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
            .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}"));
        rt.spawn(async move {
            let _ = conn.await;
        });
        Pg { rt, client }
    }

    /// Runs statements (no results).
    pub fn exec(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of every row, as text.
    pub fn column(&self, sql: &str) -> Vec<String> {
        self.rt
            .block_on(self.client.simple_query(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect()
    }
}

// ------------------------------------------------------------------------- NATS

/// A NATS client with JetStream.
pub struct Nats {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
}

impl Nats {
    /// A JetStream context (made inside the runtime, which it needs).
    fn js(&self) -> async_nats::jetstream::Context {
        let _in = self.rt.enter();
        async_nats::jetstream::new(self.client.clone())
    }

    pub fn connect() -> Nats {
        require(
            "NATS with JetStream",
            NATS,
            "nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server",
        );
        let rt = rt();
        let client = rt
            .block_on(async_nats::connect(format!("nats://{NATS}")))
            .unwrap_or_else(|e| panic!("cannot connect to NATS at {NATS}: {e}"));
        Nats { rt, client }
    }

    /// Creates a stream holding `subjects` (file storage).
    pub fn create_stream(&self, name: &str, subjects: &[&str]) {
        let js = self.js();
        self.rt
            .block_on(js.create_stream(async_nats::jetstream::stream::Config {
                name: name.to_string(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }))
            .unwrap_or_else(|e| panic!("cannot create stream {name}: {e}"));
    }

    pub fn delete_stream(&self, name: &str) {
        let js = self.js();
        let _ = self.rt.block_on(js.delete_stream(name));
    }

    /// Publishes to JetStream and waits for every acknowledgement.
    pub fn publish(&self, subject: &str, payloads: &[Vec<u8>]) {
        let js = self.js();
        self.rt.block_on(async {
            let mut acks = Vec::new();
            for p in payloads {
                acks.push(
                    js.publish(subject.to_string(), p.clone().into())
                        .await
                        .unwrap_or_else(|e| panic!("publish to {subject}: {e}")),
                );
            }
            for a in acks {
                a.await
                    .unwrap_or_else(|e| panic!("publish ack {subject}: {e}"));
            }
        });
    }

    /// Publishes one message with headers to JetStream.
    pub fn publish_with_headers(&self, subject: &str, headers: &[(&str, &str)], payload: &[u8]) {
        let js = self.js();
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        self.rt.block_on(async {
            js.publish_with_headers(subject.to_string(), h, payload.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap()
        });
    }

    /// Messages a stream holds.
    pub fn stream_messages(&self, stream: &str) -> u64 {
        let js = self.js();
        self.rt.block_on(async {
            let mut s = js.get_stream(stream).await.unwrap();
            s.info().await.unwrap().state.messages
        })
    }

    /// The payload of a stream's message `seq`.
    pub fn stream_message(&self, stream: &str, seq: u64) -> Vec<u8> {
        let js = self.js();
        self.rt.block_on(async {
            let s = js.get_stream(stream).await.unwrap();
            s.get_raw_message(seq).await.unwrap().payload.to_vec()
        })
    }

    /// `(num_pending, num_ack_pending)` of a durable consumer.
    pub fn consumer_pending(&self, stream: &str, consumer: &str) -> (u64, u64) {
        let js = self.js();
        self.rt.block_on(async {
            let s = js.get_stream(stream).await.unwrap();
            let mut c: async_nats::jetstream::consumer::PullConsumer =
                s.get_consumer(consumer).await.unwrap();
            let info = c.info().await.unwrap();
            (info.num_pending, info.num_ack_pending as u64)
        })
    }
}

// ------------------------------------------------------------------------ Redis

/// A Redis connection (database 0).
pub struct Redis {
    conn: redis::Connection,
}

impl Redis {
    pub fn connect() -> Redis {
        require(
            "Redis",
            REDIS,
            "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
        );
        let client = redis::Client::open(format!("redis://{REDIS}/0")).unwrap();
        let conn = client
            .get_connection()
            .unwrap_or_else(|e| panic!("cannot connect to Redis at {REDIS}: {e}"));
        Redis { conn }
    }

    /// `XADD stream * field value …`; the entry id.
    pub fn xadd(&mut self, stream: &str, fields: &[(&str, &[u8])]) -> String {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query(&mut self.conn)
            .unwrap_or_else(|e| panic!("XADD {stream}: {e}"))
    }

    /// Any command, its reply as a redis `Value`.
    pub fn cmd(&mut self, args: &[&str]) -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Entries of a stream (0 when it does not exist).
    pub fn xlen(&mut self, stream: &str) -> i64 {
        match self.cmd(&["XLEN", stream]) {
            redis::Value::Int(n) => n,
            _ => 0,
        }
    }

    /// Entries pending (delivered, not acknowledged) in `group`.
    pub fn pending(&mut self, stream: &str, group: &str) -> i64 {
        match self.cmd(&["XPENDING", stream, group]) {
            redis::Value::Array(v) => match v.first() {
                Some(redis::Value::Int(n)) => *n,
                _ => 0,
            },
            _ => 0,
        }
    }
}

// --------------------------------------------------------------------- RabbitMQ

/// A RabbitMQ channel on vhost `/` as guest.
pub struct Rabbit {
    rt: tokio::runtime::Runtime,
    _conn: lapin::Connection,
    channel: lapin::Channel,
}

impl Rabbit {
    pub fn connect() -> Rabbit {
        require("RabbitMQ", RABBITMQ, "rabbitmq-server -detached");
        let rt = rt();
        let (conn, channel) = rt.block_on(async {
            let conn = lapin::Connection::connect(
                &format!("amqp://guest:guest@{RABBITMQ}/%2f"),
                lapin::ConnectionProperties::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("cannot connect to RabbitMQ at {RABBITMQ}: {e}"));
            let channel = conn.create_channel().await.unwrap();
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await
                .unwrap();
            (conn, channel)
        });
        Rabbit {
            rt,
            _conn: conn,
            channel,
        }
    }

    /// Declares a durable queue with `args` (e.g. `x-dead-letter-exchange`).
    pub fn declare_queue(&self, name: &str, args: &[(&str, &str)]) {
        let mut table = lapin::types::FieldTable::default();
        for (k, v) in args {
            table.insert(
                (*k).into(),
                lapin::types::AMQPValue::LongString((*v).into()),
            );
        }
        self.rt
            .block_on(self.channel.queue_declare(
                name.into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                table,
            ))
            .unwrap_or_else(|e| panic!("declare queue {name}: {e}"));
    }

    pub fn delete_queue(&self, name: &str) {
        let _ = self.rt.block_on(
            self.channel
                .queue_delete(name.into(), lapin::options::QueueDeleteOptions::default()),
        );
    }

    /// Publishes persistent messages to `queue` through the default exchange and waits
    /// for the broker's confirms.
    pub fn publish(&self, queue: &str, bodies: &[Vec<u8>]) {
        self.rt.block_on(async {
            let mut confirms = Vec::new();
            for b in bodies {
                confirms.push(
                    self.channel
                        .basic_publish(
                            "".into(),
                            queue.into(),
                            lapin::options::BasicPublishOptions::default(),
                            b,
                            lapin::BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("publish to {queue}: {e}")),
                );
            }
            for c in confirms {
                c.await.unwrap();
            }
        });
    }

    /// Messages ready in `queue`.
    pub fn queue_len(&self, name: &str) -> u32 {
        self.rt
            .block_on(self.channel.queue_declare(
                name.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            ))
            .map(|q| q.message_count())
            .unwrap_or_else(|e| panic!("queue {name}: {e}"))
    }
}

// ------------------------------------------------------------------------- MQTT

/// Publishes to the local Mosquitto with QoS 1 and waits until every PUBACK came back.
pub fn mqtt_publish(topic: &str, payloads: &[Vec<u8>]) {
    require(
        "Mosquitto (MQTT)",
        MQTT,
        "mosquitto -d -c /etc/mosquitto/mosquitto.conf",
    );
    mqtt_publish_to(1883, topic, payloads)
}

/// [`mqtt_publish`] to the broker on `port`.
pub fn mqtt_publish_to(port: u16, topic: &str, payloads: &[Vec<u8>]) {
    let rt = rt();
    rt.block_on(async {
        let mut opts = rumqttc::MqttOptions::new(unique("pub"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_inflight(100);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 100);
        let n = payloads.len();
        let publisher = {
            let client = client.clone();
            let topic = topic.to_string();
            let payloads = payloads.to_vec();
            tokio::spawn(async move {
                for p in payloads {
                    client
                        .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, p)
                        .await
                        .unwrap();
                }
            })
        };
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while acked < n {
            let ev = tokio::time::timeout_at(deadline, events.poll())
                .await
                .expect("MQTT publish timed out")
                .unwrap_or_else(|e| panic!("MQTT at {MQTT}: {e}"));
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = ev {
                acked += 1;
            }
        }
        publisher.await.unwrap();
        let _ = client.disconnect().await;
    });
}

/// The JSON lines of a file written by a test function (missing: none).
pub fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A private Mosquitto on a free port, for tests that need broker settings the shared one
/// does not have (an unbounded per-session queue); stopped when dropped.
pub struct Mosquitto {
    pub port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` with `extra` configuration lines.
    pub fn start(extra: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto (apt-get install mosquitto): {e}"));
        let addr = format!("127.0.0.1:{port}");
        let up = crate::eventually(Duration::from_secs(10), || {
            TcpStream::connect(&addr).is_ok()
        });
        assert!(up, "the private mosquitto did not start on {addr}");
        Mosquitto {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
