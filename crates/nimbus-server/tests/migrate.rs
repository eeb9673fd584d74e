//! `nimbus_server::migrate`: a SQLite data directory filled through the stores' own APIs,
//! moved into PostgreSQL (a `TestDb` schema), then read back through the PostgreSQL
//! stores' traits, with code and object bytes fetched from the shared blob store into an
//! empty data directory. Needs the local PostgreSQL (it fails, never skips, without it).

use bytes::Bytes;
use futures_util::StreamExt;
use nimbus_blobs::{PgBlobs, SharedBlobs};
use nimbus_core::{Alias, AsyncEvent, EventStatus, FunctionConfig, FunctionName, Runtime};
use nimbus_flows::store::{FlowStore, MachineType, NewEvent, NewExecution, NewMachine, NewStep};
use nimbus_pg::testing::TestDb;
use nimbus_server::migrate::{self, MigrateOptions};
use nimbus_sources::targets::{Target, TargetStore};
use nimbus_sources::{Kind, SourceMapping, SourceSpec, SourceStore, StartingPosition};
use nimbus_store::{
    BusStore, CodeStore, Enqueued, EventQueue, EventSourceMapping, EventUpdate, HistoryStore,
    MasterKey, NewMessage, QueueSettings, QueueStore, RoleStore, Rule, RuleTarget, SecretStore,
    Store,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const T0: i64 = 1_700_000_000_000;
const MACHINE: &str = "arn:aws:states:us-east-1:000000000000:stateMachine:m";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn name(s: &str) -> FunctionName {
    FunctionName::parse(s).unwrap()
}

fn zip(text: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.js"), text).unwrap();
    nimbus_store::zip_dir(dir.path()).unwrap()
}

fn event(id: &str, key: Option<&str>) -> AsyncEvent {
    AsyncEvent {
        id: id.into(),
        function: "f".into(),
        qualifier: "$LATEST".into(),
        payload: format!("{{\"id\":\"{id}\"}}"),
        status: EventStatus::Pending,
        attempts: 0,
        created_ms: now_ms(),
        next_attempt_ms: now_ms(),
        last_error: None,
        result: None,
        idempotency_key: key.map(Into::into),
        trace: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        trigger: Some("async".into()),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// What a node's stores hold, read through the traits (the same reads on both backends).
#[derive(Debug, PartialEq)]
struct Snapshot {
    functions: Vec<nimbus_core::FunctionVersion>,
    versions: Vec<nimbus_core::FunctionVersion>,
    aliases: Vec<Alias>,
    meta: nimbus_core::FunctionMeta,
    code_refs: Vec<String>,
    logs: Vec<nimbus_store::LogEntry>,
    finished_event: AsyncEvent,
    event_config: Option<nimbus_core::EventInvokeConfig>,
    queues: Vec<nimbus_store::QueueInfo>,
    queue_mappings: Vec<EventSourceMapping>,
    buses: Vec<nimbus_store::Bus>,
    rules: Vec<Rule>,
    minutes: Vec<nimbus_store::MinuteRow>,
    alarms: Vec<nimbus_store::Alarm>,
    secrets: Vec<(String, Option<Vec<u8>>)>,
    access_keys: Vec<(String, String, String, String, i64)>,
    roles: Vec<nimbus_store::Role>,
    role_policies: Vec<(String, String)>,
    machine: nimbus_flows::store::Machine,
    flow_versions: Vec<nimbus_flows::store::Version>,
    flow_aliases: Vec<nimbus_flows::store::Alias>,
    execution: nimbus_flows::store::Execution,
    history: Vec<nimbus_flows::store::HistoryEvent>,
    source_mappings: Vec<SourceMapping>,
    checkpoint: Option<String>,
    targets: Vec<Target>,
    outbox: Vec<nimbus_sources::targets::OutboxMessage>,
}

#[allow(clippy::too_many_arguments)]
fn snapshot(
    store: &dyn Store,
    events: &dyn EventQueue,
    queues: &dyn QueueStore,
    bus: &dyn BusStore,
    history: &dyn HistoryStore,
    secrets: &SecretStore,
    flows: &dyn FlowStore,
    sources: &(impl SourceStore + TargetStore),
    execution_arn: &str,
) -> Snapshot {
    let f = name("f");
    let mut code_refs: Vec<String> = store.code_references().unwrap().into_iter().collect();
    code_refs.sort();
    let secret_names: Vec<String> = secrets
        .list()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    Snapshot {
        functions: store.list().unwrap(),
        versions: store.versions(&f).unwrap(),
        aliases: store.list_aliases(&f, None).unwrap(),
        meta: store.meta(&f).unwrap(),
        code_refs,
        logs: store.logs(&f, 0, 100).unwrap(),
        finished_event: events.get("done").unwrap(),
        event_config: events.config("f").unwrap(),
        queues: queues.list_queues().unwrap(),
        queue_mappings: queues.list_mappings().unwrap(),
        buses: bus.list_buses().unwrap(),
        rules: bus.list_rules(None).unwrap(),
        minutes: history.minutes(None, 0, i64::MAX).unwrap(),
        alarms: history.list_alarms().unwrap(),
        secrets: secret_names
            .into_iter()
            .map(|n| {
                let v = secrets.get(&n).unwrap();
                (n, v)
            })
            .collect(),
        access_keys: secrets
            .access_keys()
            .unwrap()
            .into_iter()
            .map(|k| (k.id, k.name, k.policy, k.secret, k.created_ms))
            .collect(),
        roles: secrets.roles().unwrap(),
        role_policies: secrets.role_policies("Worker").unwrap(),
        machine: flows.describe_machine(MACHINE).unwrap(),
        flow_versions: flows.list_versions(MACHINE, 10, None).unwrap().items,
        flow_aliases: flows.list_aliases(MACHINE).unwrap(),
        execution: flows.describe_execution(execution_arn).unwrap(),
        history: flows
            .history(execution_arn, false, 100, None)
            .unwrap()
            .items,
        source_mappings: sources.list().unwrap(),
        checkpoint: sources.checkpoint("m-1", "lsn").unwrap(),
        targets: sources.list_targets().unwrap(),
        outbox: sources.head("out", 10).unwrap(),
    }
}

/// What [`fill`] stored that the test checks by hand.
struct Filled {
    execution_arn: String,
    /// `(sha256, zip)` of each code package.
    packages: Vec<(String, Vec<u8>)>,
    object: Vec<u8>,
}

/// Fills `dir` through the SQLite stores.
fn fill(dir: &Path, key: &MasterKey) -> Filled {
    let f = name("f");
    let code = CodeStore::open(&dir.join("code")).unwrap();
    let store = nimbus_store::SqliteStore::open(dir).unwrap();
    let cfg = FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), "index.handler");
    let mut packages = Vec::new();
    for v in ["one", "two"] {
        let bytes = zip(&format!("exports.handler = async () => '{v}';"));
        let pinned = code.put(&bytes).unwrap();
        store.deploy(&f, &cfg, &pinned.info).unwrap();
        store.publish(&f, Some(v), None, None).unwrap();
        packages.push((pinned.info.sha256.clone(), bytes));
    }
    let alias = Alias {
        name: "live".into(),
        function_version: "1".into(),
        description: "the live one".into(),
        routing: BTreeMap::from([("2".to_string(), 0.25)]),
        revision_id: String::new(),
    };
    store.create_alias(&f, &alias).unwrap();
    store
        .tag(&f, &BTreeMap::from([("team".to_string(), "a".to_string())]))
        .unwrap();
    store.set_reserved_concurrency(&f, Some(7)).unwrap();
    store
        .append_logs(&[nimbus_store::LogEntry {
            seq: 0,
            function: "f".into(),
            ts_ms: T0,
            request_id: Some("req-1".into()),
            stream: nimbus_store::LogStream::Stdout,
            line: "hello from the single node".into(),
            level: None,
            trace_id: None,
        }])
        .unwrap();

    let events = nimbus_store::SqliteEventQueue::open(dir).unwrap();
    events.enqueue(&event("pending", None), 60_000).unwrap();
    events
        .enqueue(&event("done", Some("key-1")), 60_000)
        .unwrap();
    events.enqueue(&event("running", None), 60_000).unwrap();
    // Claim "done" and "running" (the oldest due first: all three), finish "done" and
    // put "pending" back; "running" stays claimed, as a server killed mid-attempt leaves it.
    let claimed = events.claim_due(now_ms() + 1, 10, 3_600_000).unwrap();
    assert_eq!(claimed.len(), 3);
    let n = now_ms();
    events
        .finish(
            "done",
            &EventUpdate::Succeeded {
                result: "\"ok\"".into(),
            },
            n,
        )
        .unwrap();
    events
        .finish(
            "pending",
            &EventUpdate::Retry {
                error: "throttled".into(),
                next_attempt_ms: n,
                counted: false,
            },
            n,
        )
        .unwrap();
    events
        .put_config(
            "f",
            Some(&nimbus_core::EventInvokeConfig {
                maximum_retry_attempts: 1,
                ..Default::default()
            }),
        )
        .unwrap();

    let queues = nimbus_store::SqliteQueueStore::open(dir).unwrap();
    queues
        .put_queue("jobs", &QueueSettings::default(), T0)
        .unwrap();
    queues
        .put_queue(
            "orders.fifo",
            &QueueSettings {
                fifo: true,
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    let msg = |body: &str| NewMessage {
        body: body.into(),
        attributes: serde_json::json!({}),
        ..Default::default()
    };
    let n = now_ms();
    queues.send("jobs", &[msg("a"), msg("b")], n).unwrap();
    // One received (receive count 1, in flight for 1 s).
    let got = queues.receive("jobs", 1, Some(1), n).unwrap();
    assert_eq!(got.len(), 1);
    queues
        .send(
            "orders.fifo",
            &[NewMessage {
                group_id: Some("g1".into()),
                dedup_id: Some("d1".into()),
                ..msg("first order")
            }],
            n,
        )
        .unwrap();
    queues
        .create_mapping(&EventSourceMapping {
            uuid: "qm-1".into(),
            queue: "jobs".into(),
            function: "f".into(),
            batch_size: 5,
            window_s: 0,
            enabled: true,
            report_batch_item_failures: true,
            last_modified_s: T0 / 1000,
            filters: vec![],
        })
        .unwrap();

    let bus = nimbus_store::SqliteBusStore::open(dir, T0).unwrap();
    bus.put_bus("orders", T0).unwrap();
    bus.put_rule(
        &Rule {
            bus: "default".into(),
            name: "every-minute".into(),
            pattern: None,
            schedule: Some("rate(1 minute)".into()),
            timezone: None,
            enabled: true,
            targets: vec![RuleTarget {
                id: Some("t1".into()),
                arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
                input: None,
                message_group_id: None,
            }],
            created_ms: T0,
            last_fired_ms: None,
        },
        T0,
    )
    .unwrap();
    bus.advance_watermark("default", "every-minute", T0 + 120_000)
        .unwrap();

    let history = nimbus_store::SqliteHistoryStore::open(dir).unwrap();
    history
        .add_minutes(
            T0,
            &[(
                "f".into(),
                nimbus_metrics::MinuteStats {
                    invocations: 3,
                    errors: 1,
                    ..Default::default()
                },
            )],
        )
        .unwrap();
    let spec: nimbus_core::AlarmSpec = serde_json::from_value(serde_json::json!({
        "function": "f", "metric": "Errors", "comparison": ">", "threshold": 0.0
    }))
    .unwrap();
    history.put_alarm("errors", &spec, T0).unwrap();

    let secrets = SecretStore::open(dir, key.clone()).unwrap();
    secrets.set("db-password", b"hunter2").unwrap();
    secrets
        .create_access_key(
            "AKIAMIGRATETEST00001",
            "ci",
            r#"{"Statement":[]}"#,
            "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t",
        )
        .unwrap();
    secrets
        .create_role(&nimbus_store::Role {
            name: "Worker".into(),
            path: "/".into(),
            id: "AROAMIGRATETEST000001".into(),
            trust_policy: "{}".into(),
            description: Some("runs f".into()),
            max_session_s: 3600,
            tags: vec![("k".into(), "v".into())],
            created_ms: T0,
        })
        .unwrap();
    secrets
        .put_role_policy("worker", "read", r#"{"Statement":[]}"#)
        .unwrap();

    let object = b"object bytes, moved into the shared blob store".to_vec();
    rt().block_on(async {
        let o = nimbus_objects::Objects::open_sqlite(dir, Default::default()).unwrap();
        o.create_bucket("photos").await.unwrap();
        let body = futures_util::stream::once(async {
            Ok::<_, std::convert::Infallible>(Bytes::from(object.clone()))
        });
        o.put_object("photos", "a/b.txt", body, Default::default())
            .await
            .unwrap();
    });

    let flows = nimbus_flows::store::sqlite::SqliteFlowStore::open(dir).unwrap();
    flows
        .create_machine(
            &NewMachine {
                arn: MACHINE.into(),
                name: "m".into(),
                definition: r#"{"StartAt":"A","States":{"A":{"Type":"Pass","End":true}}}"#.into(),
                machine_type: MachineType::Standard,
                role_arn: "arn:aws:iam::000000000000:role/Worker".into(),
                logging: serde_json::json!({}),
                tracing: serde_json::json!({}),
                tags: BTreeMap::new(),
                description: String::new(),
            },
            T0,
        )
        .unwrap();
    let v1 = flows.publish_version(MACHINE, "v1", None, T0).unwrap();
    flows
        .create_alias(
            MACHINE,
            "prod",
            "",
            &[nimbus_flows::store::Route {
                version_arn: v1.arn.clone(),
                weight: 100,
            }],
            T0,
        )
        .unwrap();
    let started = flows
        .start_execution(
            &NewExecution {
                machine_arn: MACHINE.into(),
                name: "run-1".into(),
                input: "{\"n\":1}".into(),
                version_arn: None,
                alias_arn: None,
                trace_header: None,
            },
            &[NewEvent::new(
                "ExecutionStarted",
                serde_json::json!({"input": "{\"n\":1}"}),
            )],
            &[NewStep {
                scope: String::new(),
                state: "A".into(),
                attempt: 0,
                due: T0,
                payload: serde_json::json!({"input": {"n": 1}}),
            }],
            T0,
        )
        .unwrap();

    let sources = nimbus_sources::SqliteSourceStore::open(dir).unwrap();
    let mut m = SourceMapping::new(
        "m-1".into(),
        "f".into(),
        SourceSpec {
            kind: Kind::Redis,
            endpoints: vec!["redis://127.0.0.1:6379".into()],
            topics: vec!["s".into()],
            group: None,
            secret: None,
            options: Default::default(),
            starting_position: StartingPosition::TrimHorizon,
        },
    );
    m.last_modified_s = T0 / 1000;
    sources.create(&m).unwrap();
    sources.set_checkpoint("m-1", "lsn", "0/17").unwrap();
    sources
        .put_target(&Target {
            name: "out".into(),
            kind: Kind::Nats,
            endpoints: vec!["nats://127.0.0.1:4222".into()],
            secret: None,
            options: BTreeMap::from([("subject".to_string(), "out".to_string())]),
            last_modified_s: T0 / 1000,
        })
        .unwrap();
    sources.enqueue("out", "{\"x\":1}", None, T0).unwrap();
    Filled {
        execution_arn: started.execution.arn,
        packages,
        object,
    }
}

#[test]
fn a_data_directory_moves_into_postgres_with_the_same_identities_and_numbers() {
    let from = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    nimbus_store::write_private_file(&from.path().join("master.key"), key.to_base64().as_bytes())
        .unwrap();
    let Filled {
        execution_arn,
        packages,
        object,
    } = fill(from.path(), &key);

    let dir = from.path();
    let before = snapshot(
        &nimbus_store::SqliteStore::open(dir).unwrap(),
        &nimbus_store::SqliteEventQueue::open(dir).unwrap(),
        &nimbus_store::SqliteQueueStore::open(dir).unwrap(),
        &nimbus_store::SqliteBusStore::open(dir, T0).unwrap(),
        &nimbus_store::SqliteHistoryStore::open(dir).unwrap(),
        &SecretStore::open(dir, key.clone()).unwrap(),
        &nimbus_flows::store::sqlite::SqliteFlowStore::open(dir).unwrap(),
        &nimbus_sources::SqliteSourceStore::open(dir).unwrap(),
        &execution_arn,
    );
    assert_eq!(before.versions.len(), 3, "$LATEST and 2 versions");

    let db = TestDb::new("migrate");
    let lines = std::sync::Mutex::new(Vec::<String>::new());
    let opts = MigrateOptions {
        from: from.path().to_path_buf(),
        to: db.url.clone(),
        master_key_file: None,
    };
    let report = migrate::run(&opts, &|l| lines.lock().unwrap().push(l.to_string())).unwrap();
    let lines = lines.into_inner().unwrap();
    eprintln!("{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("registry: 1 functions, 2 versions, 1 aliases")),
        "{lines:#?}"
    );
    assert_eq!(report.master_key_id, key.id());
    assert_eq!(report.code_blobs, 2);
    assert_eq!(report.object_blobs, 1);

    let pg = &db.pg;
    let pg_store = nimbus_store::PgStore::open(pg).unwrap();
    let pg_events = nimbus_store::postgres::events::PgEventQueue::open(pg).unwrap();
    let pg_queues = nimbus_store::postgres::queues::PgQueueStore::open(pg).unwrap();
    let pg_flows = nimbus_flows::store::postgres::PgFlowStore::open(pg).unwrap();
    let pg_secrets = SecretStore::open_postgres(pg, key.clone()).unwrap();
    let after = snapshot(
        &pg_store,
        &pg_events,
        &pg_queues,
        &nimbus_store::postgres::bus::PgBusStore::open(pg, now_ms()).unwrap(),
        &nimbus_store::postgres::history::PgHistoryStore::open(pg).unwrap(),
        &pg_secrets,
        &pg_flows,
        &nimbus_sources::postgres::PgSourceStore::open(pg).unwrap(),
        &execution_arn,
    );
    assert_eq!(after, before);
    assert_eq!(
        after.secrets,
        vec![("db-password".to_string(), Some(b"hunter2".to_vec()))]
    );

    // Numbers go on from where the node left them.
    let f = name("f");
    let cfg = FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), "index.handler");
    let third = nimbus_store::CodeInfo::of(b"third");
    pg_store.deploy(&f, &cfg, &third).unwrap();
    assert_eq!(pg_store.publish(&f, None, None, None).unwrap().version, "3");

    // Async events: the pending one and the one left running are delivered; the finished
    // one keeps its result and its idempotency key.
    let mut due: Vec<String> = pg_events
        .claim_due(now_ms() + 1, 10, 60_000)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    due.sort();
    assert_eq!(due, ["pending", "running"]);
    assert!(matches!(
        pg_events.enqueue(&event("again", Some("key-1")), 3_600_000).unwrap(),
        Enqueued::Duplicate(id) if id == "done"
    ));
    assert_eq!(
        pg_events.backlog().unwrap().owners,
        vec![("f".to_string(), 2)]
    );

    // Queues: the received message comes back with its receive count, the FIFO
    // deduplication id still holds, new messages are numbered after the old ones.
    let later = now_ms() + 5_000;
    let got = pg_queues.receive("jobs", 10, None, later).unwrap();
    let counts: BTreeMap<String, u32> = got
        .iter()
        .map(|m| (m.body.clone(), m.receive_count))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
    );
    let first = pg_queues.receive("orders.fifo", 1, None, later).unwrap();
    let dup = pg_queues
        .send(
            "orders.fifo",
            &[NewMessage {
                body: "first order".into(),
                attributes: serde_json::json!({}),
                group_id: Some("g1".into()),
                dedup_id: Some("d1".into()),
                ..Default::default()
            }],
            later,
        )
        .unwrap();
    assert_eq!(
        dup[0].id, first[0].id,
        "deduplicated against the moved message"
    );

    // Workflows: the execution's step is still due.
    let steps = pg_flows.claim_due(T0 + 1, 10, 60_000).unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].execution_arn, execution_arn);

    // Code and object bytes from the shared blob store, into an empty data directory.
    let node = tempfile::tempdir().unwrap();
    let blobs: Arc<dyn SharedBlobs> = Arc::new(PgBlobs::open(pg).unwrap());
    let code = CodeStore::open(&node.path().join("code"))
        .unwrap()
        .with_shared(blobs.clone());
    for (sha, bytes) in &packages {
        assert_eq!(&code.zip_bytes(sha).unwrap(), bytes);
    }
    rt().block_on(async {
        let meta = nimbus_objects::store::postgres::PgMetaStore::open(pg).unwrap();
        let local = nimbus_objects::BlobStore::open(&node.path().join("objects"))
            .unwrap()
            .with_shared(blobs.clone());
        let o = nimbus_objects::Objects::new(Arc::new(meta), local, Default::default()).unwrap();
        let r = o
            .get_object("photos", "a/b.txt", None, Default::default())
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut body = r.body;
        while let Some(chunk) = body.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, object);
        assert_eq!(o.list_buckets().await.unwrap().len(), 1);
    });

    // A second migration into the now non-empty database is refused, naming what is there.
    let e = migrate::run(&opts, &|_| {}).unwrap_err().to_string();
    assert!(
        e.contains("already holds Nimbus data") && e.contains("registry_functions"),
        "{e}"
    );
}

#[test]
fn a_data_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(nimbus_store::SqliteStore::open(dir.path()).unwrap());
    // Another process holding the database open: sqlite3 in the background.
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1]); c.execute('SELECT COUNT(*) FROM functions').fetchall()\n\
             print('open', flush=True); time.sleep(30)",
        )
        .arg(dir.path().join("registry.db"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the other process");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let found = migrate::in_use(dir.path()).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let (file, pid) = found.expect("the open database is seen");
    assert_eq!(pid as u32, child.id());
    assert!(file.ends_with("registry.db"), "{}", file.display());
    assert_eq!(migrate::in_use(dir.path()).unwrap(), None);

    let e = migrate::run(
        &MigrateOptions {
            from: tempfile::tempdir().unwrap().path().to_path_buf(),
            to: "postgres://nobody@127.0.0.1:1/none".into(),
            master_key_file: None,
        },
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a nimbus data directory"), "{e}");
}
