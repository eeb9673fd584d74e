//! Secrets: set through the CLI from stdin, referenced from a function's environment,
//! seen by that function only, masked in its logs, absent from every API response and
//! from the data dir's bytes; a missing secret is a clear function error; rotation.

use base64::Engine as _;
use nimbus_tests::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VALUE: &str = "s3cr3t-Ab9xQ7-zz41-value";
const NEW_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn secret_set(s: &Server, name: &str, value: &str) -> String {
    let mut child = Command::new(nimbus_bin())
        .args(["secret", "set", name])
        .env("NIMBUS_ENDPOINT", s.base())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{value}\n").as_bytes())
        .unwrap();
    cli_ok(&child.wait_with_output().unwrap()).unwrap()
}

/// Every file under `dir`, recursively, as bytes.
fn contains_bytes(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

const APP: &str = concat!(
    "import os\n",
    "def handler(e, c):\n",
    "    v = os.environ.get('DB_PASSWORD')\n",
    "    print('the password is', v)\n",
    "    return {'has': v is not None, 'reversed': v[::-1] if v else None}\n",
);

#[test]
fn secrets_reach_only_their_function_and_never_leak() {
    let mut s = Server::start(&[]);
    let out = secret_set(&s, "db-pass", VALUE);
    assert!(out.contains("created secret db-pass"), "{out}");
    let ls = cli_ok(&s.cli(&["secret", "ls"])).unwrap();
    assert!(ls.contains("db-pass") && !ls.contains(VALUE), "{ls}");

    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("app.py", APP)]);
    let d = dir.path().to_str().unwrap();
    let py = ["--runtime", "python3.12", "--handler", "app.handler"];
    let mut args = vec!["deploy", d, "--name", "withsecret"];
    args.extend(py);
    args.extend(["--secret-env", "DB_PASSWORD=db-pass"]);
    cli_ok(&s.cli(&args)).unwrap();
    let mut args = vec!["deploy", d, "--name", "nosecret"];
    args.extend(py);
    cli_ok(&s.cli(&args)).unwrap();

    // The function sees the value; the log tail shows **** instead.
    let r = s.invoke_with("withsecret", b"{}".to_vec(), &[("X-Amz-Log-Type", "Tail")]);
    let reversed: String = VALUE.chars().rev().collect();
    assert_eq!(r.ok()["reversed"], reversed.as_str());
    let tail = base64::engine::general_purpose::STANDARD
        .decode(r.header("x-amz-log-result").expect("log result"))
        .unwrap();
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains("the password is ****"), "{tail}");
    assert!(!tail.contains(VALUE), "{tail}");
    assert!(!r.body.contains(VALUE));

    // Another function does not get it.
    let r = s.invoke("nosecret", "{}");
    assert_eq!(r.ok()["has"], false);

    // Stored logs are masked.
    assert!(eventually(Duration::from_secs(10), || {
        let (_, logs) = s.get_json("/v1/functions/withsecret/logs");
        logs.to_string().contains("the password is ****")
    }));
    let (_, logs) = s.get_json("/v1/functions/withsecret/logs");
    assert!(!logs.to_string().contains(VALUE));
    let logs_cli = cli_ok(&s.cli(&["logs", "withsecret"])).unwrap();
    assert!(!logs_cli.contains(VALUE), "{logs_cli}");

    // No API response holds the value; the native API shows the reference.
    let (_, f) = s.get_json("/v1/functions/withsecret");
    assert_eq!(f["config"]["secrets"]["DB_PASSWORD"], "db-pass", "{f}");
    for path in [
        "/v1/functions",
        "/v1/functions/withsecret",
        "/v1/functions/withsecret/versions",
        "/v1/secrets",
        "/2015-03-31/functions",
        "/2015-03-31/functions/withsecret",
        "/2015-03-31/functions/withsecret/configuration",
    ] {
        let (status, body) = s.get_json(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.to_string().contains(VALUE), "{path}: {body}");
    }
    let (_, cfg) = s.get_json("/2015-03-31/functions/withsecret/configuration");
    assert!(
        cfg["Environment"]["Variables"].get("DB_PASSWORD").is_none(),
        "{cfg}"
    );

    // A missing secret: a clear function error, and the server keeps serving.
    s.deploy(
        "missing",
        serde_json::json!({"runtime": "python3.12", "handler": "app.handler",
                           "secrets": {"DB_PASSWORD": "nope"}}),
        &[("app.py", APP)],
    );
    let r = s.invoke("missing", "{}");
    assert!(r.body.contains("Runtime.SecretNotFound"), "{}", r.body);
    assert!(r.body.contains("nope"), "{}", r.body);
    assert!(s.healthy());
    assert_eq!(s.invoke("nosecret", "{}").ok()["has"], false);

    // Nothing under the data dir (databases, WAL files, logs, the server's own log) holds
    // the value in plaintext, nor, on PostgreSQL, any row of the server's schema.
    let hits = contains_bytes(s.data_dir.path(), VALUE.as_bytes());
    assert!(hits.is_empty(), "plaintext secret in {hits:?}");
    let rows = s.database_tables_containing(VALUE);
    assert!(rows.is_empty(), "plaintext secret in PostgreSQL: {rows:?}");

    // Rotation: re-encrypt under a new key; the server's key file is replaced; the old
    // key is refused afterwards; a restart with the new key works.
    let data = s.data_dir.path().join("data");
    let old_key = std::fs::read_to_string(data.join("master.key")).unwrap();
    let key_file = dir.path().join("new.key");
    std::fs::write(&key_file, format!("{NEW_KEY}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = s.cli(&[
            "secret",
            "rotate",
            "--new-key-file",
            key_file.to_str().unwrap(),
        ]);
        assert!(
            !refused.status.success(),
            "a world-readable key file is refused"
        );
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = cli_ok(&s.cli(&[
        "secret",
        "rotate",
        "--new-key-file",
        key_file.to_str().unwrap(),
    ]))
    .unwrap();
    assert!(out.contains("re-encrypted 1 secret"), "{out}");
    assert_eq!(
        std::fs::read_to_string(data.join("master.key"))
            .unwrap()
            .trim(),
        NEW_KEY
    );

    s.kill9();
    let port = free_port().to_string();
    let mut old = Command::new(nimbus_bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .args(s.database_args())
        .env("NIMBUS_MASTER_KEY", old_key.trim())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            old.kill().unwrap();
            panic!("a server with the old master key started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = old.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master key"), "{err}");

    s.restart();
    let r = s.invoke("withsecret", "{}");
    assert_eq!(r.ok()["reversed"], reversed.as_str());
    let hits = contains_bytes(s.data_dir.path(), VALUE.as_bytes());
    assert!(hits.is_empty(), "plaintext secret in {hits:?}");
    let rows = s.database_tables_containing(VALUE);
    assert!(rows.is_empty(), "plaintext secret in PostgreSQL: {rows:?}");

    // Delete: the function now fails clearly.
    cli_ok(&s.cli(&["secret", "rm", "db-pass"])).unwrap();
    let ls = cli_ok(&s.cli(&["secret", "ls"])).unwrap();
    assert!(!ls.contains("db-pass"), "{ls}");
}

#[test]
fn master_key_file_flag_and_permissions() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("nimbus.key");
    let key_arg = key.to_str().unwrap().to_string();
    let s = Server::start(&["--master-key-file", &key_arg]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "generated key file mode {mode:o}");
    }
    assert!(!s.data_dir.path().join("data/master.key").exists());
    assert!(
        s.log().contains(&key_arg),
        "the start says where the key is"
    );
    secret_set(&s, "k", "value-under-flag-key");
    drop(s);

    // A key file others can read is refused at start.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(nimbus_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--master-key-file", &key_arg])
        .env_remove("NIMBUS_MASTER_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}
