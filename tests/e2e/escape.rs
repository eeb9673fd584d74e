//! Sandbox escape tests: each deploys a real function that tries to do harm, and checks
//! both that the harm did not happen and that the server still serves. They run as root
//! (CI does) with the full sandbox; without it they fail, they do not skip.
//! Network escapes belong to the network-namespace tests.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const HELLO: &str = "def handler(e, c):\n    return 'hello'\n";

/// A server whose instances must be fully sandboxed.
fn sandboxed() -> Server {
    let s = Server::start(&[]);
    let (_, health) = s.get_json("/v1/health");
    assert_eq!(
        health["isolation"]["level"],
        "full",
        "these tests need the full sandbox (root, bubblewrap, util-linux, cgroups): {}\n{}",
        health["isolation"],
        s.log()
    );
    s.deploy("hello", python_cfg("app.handler"), &[("app.py", HELLO)]);
    s
}

/// The server still answers, with a fresh or warm instance.
fn still_serves(s: &Server) {
    assert!(s.healthy(), "server is down:\n{}", s.log());
    assert_eq!(s.invoke("hello", "{}").ok(), json!("hello"));
}

fn py(s: &Server, name: &str, code: &str) {
    s.deploy(name, python_cfg("app.handler"), &[("app.py", code)]);
}

#[test]
fn an_instance_is_unprivileged_and_filtered() {
    let s = sandboxed();
    py(
        &s,
        "who",
        "import os\ndef handler(e, c):\n    st = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\n    return {'uid': os.getuid(), 'gid': os.getgid(), 'groups': os.getgroups(), 'cap_eff': st['CapEff'].strip(), 'cap_bnd': st['CapBnd'].strip(), 'nnp': st['NoNewPrivs'].strip(), 'seccomp': st['Seccomp'].strip(), 'cwd': os.getcwd(), 'root': os.environ['LAMBDA_TASK_ROOT'], 'rt': os.environ['LAMBDA_RUNTIME_DIR'], 'host': os.uname().nodename}\n",
    );
    let v = s.invoke("who", "{}").ok();
    let uid = v["uid"].as_u64().unwrap();
    // 200000 + the server's block of 65536 (by its pid) + a slot.
    assert!((200_000..200_000 + 4096 * 65_536).contains(&uid), "{v}");
    assert_eq!(
        (uid - 200_000) / 65_536,
        u64::from(s.child.as_ref().unwrap().id() % 4096),
        "{v}"
    );
    assert_eq!(v["gid"], v["uid"], "{v}");
    assert_eq!(v["groups"], json!([]), "{v}");
    assert_eq!(v["cap_eff"], "0000000000000000", "{v}");
    assert_eq!(v["cap_bnd"], "0000000000000000", "{v}");
    assert_eq!(v["nnp"], "1", "{v}");
    assert_eq!(v["seccomp"], "2", "a seccomp filter is active: {v}");
    assert_eq!(v["cwd"], "/var/task", "{v}");
    assert_eq!(v["root"], "/var/task", "{v}");
    assert_eq!(v["rt"], "/var/runtime", "{v}");
    assert_eq!(v["host"], "nimbus", "own UTS namespace: {v}");
    // Two instances at once get two uids.
    py(
        &s,
        "slowwho",
        "import os, time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return {'uid': os.getuid()}\n",
    );
    let uids: Vec<u64> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                sc.spawn(|| {
                    s.invoke("slowwho", r#"{"sleep":1}"#).ok()["uid"]
                        .as_u64()
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(uids[0], uids[1], "each instance has its own uid");
    still_serves(&s);
}

#[test]
fn cannot_read_other_functions_code_or_tmp() {
    let s = sandboxed();
    s.deploy(
        "victim",
        python_cfg("app.handler"),
        &[
            ("app.py", "import os\ndef handler(e, c):\n    open('/tmp/victim-tmp.txt', 'w').write('VICTIM-TMP-SECRET')\n    return open('secret.txt').read()\n"),
            ("secret.txt", "VICTIM-CODE-SECRET"),
        ],
    );
    assert_eq!(s.invoke("victim", "{}").ok(), json!("VICTIM-CODE-SECRET"));
    let data = s.data_dir.path().join("data");
    let attacker = r#"import os
def handler(e, c):
    found = []
    for base in ['/', e['data']]:
        for root, dirs, files in os.walk(base):
            if root in ('/proc', '/sys', '/usr', '/dev'):
                dirs[:] = []
                continue
            for f in files:
                if f in ('secret.txt', 'victim-tmp.txt', 'secrets.db', 'master.key', 'registry.db'):
                    found.append(os.path.join(root, f))
    try:
        os.listdir(e['data'])
        found.append('data dir listed')
    except OSError:
        pass
    # Writing into the code or the runtimes fails: they are read-only.
    for p in ['/var/task/x', '/var/runtime/x', '/usr/x', '/etc/x']:
        try:
            open(p, 'w').write('x')
            found.append('wrote ' + p)
        except OSError:
            pass
    return {'found': found, 'tmp': os.listdir('/tmp')}
"#;
    let mut cfg = python_cfg("app.handler");
    cfg["timeout_s"] = json!(60);
    s.deploy("attacker", cfg, &[("app.py", attacker)]);
    let v = s
        .invoke("attacker", &json!({ "data": data }).to_string())
        .ok();
    assert_eq!(v["found"], json!([]), "{v}");
    assert_eq!(v["tmp"], json!([]), "a fresh /tmp: {v}");
    // The victim is intact.
    assert_eq!(s.invoke("victim", "{}").ok(), json!("VICTIM-CODE-SECRET"));
    still_serves(&s);
}

/// `host` and `port` of a `postgres://user@host:port/db?…` URL.
fn pg_host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().expect("the port of the URL")),
        None => (hostport.to_string(), 5432),
    }
}

/// The stores are out of a function's reach: on SQLite their files in the data dir (and the
/// master key); on PostgreSQL (`NIMBUS_TEST_BACKEND=postgres`) the master key in the data
/// dir, and the database itself: neither its TCP port (on the host's loopback or through the
/// egress's host address) nor its Unix socket answers, and the function's environment does
/// not hold the `--database` URL.
#[test]
fn cannot_read_the_data_dir_or_the_secrets_store() {
    let s = sandboxed();
    let data = s.data_dir.path().join("data");
    assert!(data.join("master.key").is_file());
    if s.database.is_none() {
        assert!(data.join("secrets.db").is_file());
    }
    let url = s
        .database
        .as_ref()
        .map_or_else(test_pg_url, |db| db.url.clone());
    let (host, port) = pg_host_port(&url);
    let code = r#"import os, socket
def handler(e, c):
    got = {}
    for f in ['secrets.db', 'master.key', 'registry.db', 'logs.db']:
        try:
            got[f] = len(open(os.path.join(e['data'], f), 'rb').read())
        except OSError as err:
            got[f] = err.strerror
    for h in dict.fromkeys([e['host'], '127.0.0.1', '10.0.2.2']):
        try:
            socket.create_connection((h, e['port']), timeout=3).close()
            got['tcp ' + h] = 'connected'
        except OSError as err:
            got['tcp ' + h] = str(err)
    for d in ['/var/run/postgresql', '/run/postgresql', '/tmp']:
        path = '%s/.s.PGSQL.%d' % (d, e['port'])
        try:
            u = socket.socket(socket.AF_UNIX)
            u.settimeout(3)
            u.connect(path)
            u.close()
            got['unix ' + path] = 'connected'
        except OSError as err:
            got['unix ' + path] = str(err)
    got['env'] = [k for k, v in os.environ.items() if 'postgres' in v.lower() or 'postgres' in k.lower()]
    return got
"#;
    py(&s, "thief", code);
    let v = s
        .invoke(
            "thief",
            &json!({ "data": data, "host": host, "port": port }).to_string(),
        )
        .ok();
    for f in ["secrets.db", "master.key", "registry.db", "logs.db"] {
        assert!(v[f].is_string(), "{f} must be unreadable: {v}");
    }
    let map = v.as_object().unwrap();
    let tries: Vec<_> = map
        .iter()
        .filter(|(k, _)| k.starts_with("tcp ") || k.starts_with("unix "))
        .collect();
    assert!(tries.len() >= 5, "{v}");
    for (what, answer) in tries {
        assert_ne!(
            answer, "connected",
            "the database must be unreachable ({what}): {v}"
        );
    }
    assert_eq!(
        v["env"],
        json!([]),
        "no database URL in the environment: {v}"
    );
    still_serves(&s);
}

#[test]
fn host_processes_are_invisible_and_unkillable() {
    let s = sandboxed();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("120")
        .spawn()
        .unwrap();
    let server_pid = s.child.as_ref().unwrap().id();
    let code = r#"import os, signal
def handler(e, c):
    pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
    cmds = []
    for p in pids:
        try:
            cmds.append(open('/proc/%d/cmdline' % p, 'rb').read().replace(b'\0', b' ').decode())
        except OSError:
            pass
    killed = []
    for p in [e['sleep'], e['server'], e['me'], 1]:
        try:
            os.kill(p, signal.SIGKILL)
            killed.append(p)
        except OSError:
            pass
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    return {'pids': pids, 'cmds': cmds, 'killed': killed}
"#;
    py(&s, "killer", code);
    let r = s.invoke(
        "killer",
        &json!({ "sleep": sleeper.id(), "server": server_pid, "me": std::process::id() })
            .to_string(),
    );
    // kill(-1) may take the instance down before it answers: both outcomes are fine.
    if !r.function_error() {
        let v = r.json();
        let pids = v["pids"].as_array().unwrap();
        assert!(pids.len() <= 4, "only the sandbox's processes: {v}");
        let cmds = v["cmds"].to_string();
        assert!(!cmds.contains("serve"), "{v}");
        assert!(!cmds.contains("sleep"), "{v}");
        assert!(!cmds.contains("/data"), "no host paths: {v}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the host's sleep must survive"
    );
    assert!(pid_alive(server_pid.into()));
    still_serves(&s);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn a_fork_bomb_is_bounded_and_cleaned_up() {
    let s = sandboxed();
    let mut cfg = python_cfg("app.handler");
    cfg["timeout_s"] = json!(4);
    let code = format!(
        r#"import os, time
def handler(e, c):
    if not e.get('bomb'):
        return {{'id': {INSTANCE_ID_PY}}}
    n = 0
    try:
        while True:
            if os.fork() == 0:
                while True:
                    try:
                        os.fork()
                    except OSError:
                        time.sleep(0.05)
            n += 1
    except OSError as err:
        return {{'forks': n, 'error': err.strerror}}
"#
    );
    s.deploy("bomb", cfg, &[("app.py", &code)]);
    let id = s.invoke("bomb", "{}").ok()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.invoke("bomb", r#"{"bomb":true}"#);
    if !r.function_error() {
        let v = r.json();
        assert!(v["forks"].as_u64().unwrap() < 1100, "{v}");
    }
    still_serves(&s);
    // The bombing instance is killed (at once or after the timeout): nothing is left.
    let r2 = s.invoke("bomb", "{}");
    let _ = r2;
    assert!(
        eventually(Duration::from_secs(15), || !instance_alive(&id)),
        "the bombing instance's processes must all be gone"
    );
    still_serves(&s);
}

#[test]
fn tmp_is_private_and_limited() {
    let s = sandboxed();
    let mut cfg = python_cfg("app.handler");
    cfg["memory_mb"] = json!(1024);
    // Writing 512 MB takes a while on a loaded machine.
    cfg["timeout_s"] = json!(60);
    let code = r#"import os, errno
def handler(e, c):
    chunk = b'x' * (1 << 20)
    n = 0
    err = None
    try:
        with open('/tmp/fill', 'wb') as f:
            while n < 2048:
                f.write(chunk)
                f.flush()
                n += 1
    except OSError as ex:
        err = errno.errorcode.get(ex.errno)
    os.unlink('/tmp/fill')
    return {'mb': n, 'error': err}
"#;
    s.deploy("filler", cfg, &[("app.py", code)]);
    let v = s.invoke("filler", "{}").ok();
    assert_eq!(v["error"], "ENOSPC", "{v}");
    let mb = v["mb"].as_u64().unwrap();
    assert!((500..=512).contains(&mb), "default limit 512 MB: {v}");
    // EphemeralStorage raises it (Lambda API), and GetFunction reports it.
    let (status, _) = s.put_json(
        "/2015-03-31/functions/filler/configuration",
        &json!({ "EphemeralStorage": { "Size": 700 } }),
    );
    assert_eq!(status, 200);
    let (_, f) = s.get_json("/2015-03-31/functions/filler");
    assert_eq!(f["Configuration"]["EphemeralStorage"]["Size"], 700, "{f}");
    let v = s.invoke("filler", "{}").ok();
    let mb = v["mb"].as_u64().unwrap();
    assert!((690..=700).contains(&mb), "limit 700 MB: {v}");
    let (status, e) = s.put_json(
        "/2015-03-31/functions/filler/configuration",
        &json!({ "EphemeralStorage": { "Size": 100 } }),
    );
    assert_eq!(status, 400, "{e}");
    still_serves(&s);
}

#[test]
fn memory_and_file_limits_hold() {
    let s = sandboxed();
    let code = r#"import os, errno
def handler(e, c):
    if e.get('mb'):
        blob = bytearray(e['mb'] * 1024 * 1024)
        for i in range(0, len(blob), 4096):
            blob[i] = 1
        return 'survived'
    fds = []
    err = None
    try:
        for _ in range(100000):
            fds.append(os.open('/dev/null', os.O_RDONLY))
    except OSError as ex:
        err = errno.errorcode.get(ex.errno)
    n = len(fds)
    for fd in fds:
        os.close(fd)
    return {'opened': n, 'error': err}
"#;
    py(&s, "greedy", code);
    let v = s.invoke("greedy", "{}").ok();
    assert_eq!(v["error"], "EMFILE", "{v}");
    assert!(v["opened"].as_u64().unwrap() < 1024, "{v}");
    let r = s.invoke("greedy", r#"{"mb":400}"#);
    assert!(r.function_error(), "{}", r.body);
    assert_eq!(r.json()["errorType"], "Runtime.OutOfMemory", "{}", r.body);
    still_serves(&s);
    assert_eq!(s.invoke("greedy", "{}").ok()["error"], "EMFILE");
}

#[test]
fn ptrace_mount_and_namespaces_are_denied() {
    let s = sandboxed();
    let code = r#"import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
def call(f, *args):
    r = f(*args)
    return 'ok' if r >= 0 else errno.errorcode.get(ctypes.get_errno())
def handler(e, c):
    os.makedirs('/tmp/m', exist_ok=True)
    return {
        'ptrace_traceme': call(libc.ptrace, 0, 0, None, None),
        'ptrace_attach': call(libc.ptrace, 16, 1, None, None),
        'mount': call(libc.mount, b'none', b'/tmp/m', b'tmpfs', 0, None),
        'umount': call(libc.umount2, b'/proc', 0),
        'unshare_user': call(libc.unshare, 0x10000000),
        'unshare_mount': call(libc.unshare, 0x00020000),
        'setuid0': call(libc.setuid, 0),
        'chroot': call(libc.chroot, b'/tmp'),
        'x32_getpid': call(libc.syscall, 0x40000000 | 39),
    }
"#;
    py(&s, "escaper", code);
    let v = s.invoke("escaper", "{}").ok();
    for k in [
        "ptrace_traceme",
        "ptrace_attach",
        "mount",
        "umount",
        "unshare_user",
        "unshare_mount",
        "setuid0",
        "chroot",
    ] {
        assert_eq!(v[k], "EPERM", "{k}: {v}");
    }
    // x86_64: the x32 system call numbers are refused as a whole.
    assert_eq!(v["x32_getpid"], "ENOSYS", "{v}");
    still_serves(&s);
}

#[test]
fn strict_isolation_starts_here_and_none_warns() {
    // This host (root, as CI) has every layer: strict starts.
    let s = Server::start(&["--isolation", "strict"]);
    let (_, h) = s.get_json("/v1/health");
    assert_eq!(h["isolation"]["mode"], "strict");
    assert_eq!(h["isolation"]["level"], "full", "{h}");
    let names: Vec<&str> = h["isolation"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l: &Value| l["name"].as_str().unwrap())
        .collect();
    for l in [
        "namespaces",
        "filesystem",
        "user",
        "seccomp",
        "paths",
        "rlimits",
        "memory",
        "pids",
        "cpu",
    ] {
        assert!(names.contains(&l), "{l} in {names:?}");
    }
    drop(s);
    let s = Server::start(&["--isolation", "none"]);
    let (_, h) = s.get_json("/v1/health");
    assert_eq!(h["isolation"]["level"], "none");
    s.deploy("hello", python_cfg("app.handler"), &[("app.py", HELLO)]);
    assert_eq!(s.invoke("hello", "{}").ok(), json!("hello"));
    assert!(s.log().contains("NOT isolated"), "{}", s.log());
    assert!(s.log().contains("WITHOUT isolation"), "{}", s.log());
}

#[test]
fn strict_refuses_to_start_when_a_layer_is_missing() {
    // As an unprivileged user the server cannot create cgroups: strict must refuse, naming
    // them; auto starts and reports them missing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let run = |mode: &str| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .arg(nimbus_bin())
        .args(["serve", "--isolation", mode, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path().join(mode))
        .env("HOME", dir.path());
        run_bounded(&mut cmd, Duration::from_secs(10))
    };
    let (exited, status, log) = run("strict");
    assert!(exited && !status.success(), "strict must refuse: {log}");
    assert!(log.contains("--isolation strict"), "{log}");
    assert!(log.contains("memory") && log.contains("pids"), "{log}");
    let (exited, _, log) = run("auto");
    assert!(!exited, "auto starts anyway: {log}");
    assert!(log.contains("isolation: partial"), "{log}");
    assert!(log.contains("MISSING"), "{log}");
}

/// A bash `bootstrap` (`provided`: never a stem cell) answering every event with its
/// `/proc/self/mountinfo` and `/proc/self/mounts`, base64-encoded.
const MOUNTS_BOOTSTRAP: &str = r#"#!/bin/bash
set -euo pipefail
while true; do
  HEADERS=$(mktemp)
  curl -sS -o /dev/null -D "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next"
  ID=$(grep -i '^lambda-runtime-aws-request-id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  BODY="{\"mountinfo\":\"$(base64 -w0 /proc/self/mountinfo)\",\"mounts\":\"$(base64 -w0 /proc/self/mounts)\",\"b64\":true}"
  curl -sS -X POST "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$ID/response" -d "$BODY" >/dev/null
  rm -f "$HEADERS"
done
"#;

/// A static Java handler (default package) answering with the same two files.
const MOUNTS_JAVA: &str = r#"package probe;

import java.nio.file.Files;
import java.nio.file.Path;

public class Mounts {
    public static String read(String in) throws Exception {
        return Files.readString(Path.of("/proc/self/mountinfo")) + "\n---\n"
            + Files.readString(Path.of("/proc/self/mounts"));
    }
}
"#;

/// Whether `s` holds a run of 64 hex digits (a SHA-256, as code packages are named).
fn has_hex64(s: &str) -> bool {
    let mut run = 0;
    for c in s.chars() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 64 {
            return true;
        }
    }
    false
}

/// What the instance saw, as (mountinfo, mounts).
fn mount_tables(v: &Value) -> (String, String) {
    use base64::Engine;
    if let Some(text) = v.as_str() {
        let (a, b) = text.split_once("\n---\n").expect("two tables");
        return (a.to_string(), b.to_string());
    }
    let field = |k: &str| {
        let s = v[k].as_str().unwrap_or_else(|| panic!("no {k}: {v}"));
        if v["b64"] == true {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
        } else {
            s.to_string()
        }
    };
    (field("mountinfo"), field("mounts"))
}

/// Neither mount table names the data dir or a content hash, and `/var/task` and
/// `/var/runtime` are there (mounts of their own, rooted at `/`).
fn check_mount_tables(what: &str, v: &Value, data_dirs: &[String]) {
    let (mountinfo, mounts) = mount_tables(v);
    for (name, table) in [("mountinfo", &mountinfo), ("mounts", &mounts)] {
        for d in data_dirs {
            assert!(
                !table.contains(d.as_str()),
                "{what}: /proc/self/{name} shows the data dir {d}:\n{table}"
            );
        }
        assert!(
            !table.contains("code/unpacked") && !has_hex64(table),
            "{what}: /proc/self/{name} shows a content hash:\n{table}"
        );
    }
    for dir in ["/var/task", "/var/runtime"] {
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(dir))
            .unwrap_or_else(|| panic!("{what}: no {dir} mount:\n{mountinfo}"));
        assert_eq!(
            line.split(' ').nth(3),
            Some("/"),
            "{what}: {dir} is not a mount of its own: {line}"
        );
    }
}

/// `/proc/self/mountinfo` (a mount's root inside its filesystem: a bind mount of a host
/// directory shows the directory's host path) and `/proc/self/mounts` reveal neither the
/// data dir's location nor the code's content hash: for code mounted into a specialised
/// stem cell (Python, Node) and into a fresh sandbox (a `provided` bash bootstrap, Python
/// with `PYTHONPATH`, which keeps it off the stem cells, and Java, whose compiled bootstrap
/// is under `/var/runtime`).
#[test]
fn mount_tables_reveal_no_host_paths() {
    let s = sandboxed();
    let (_, h) = s.get_json("/v1/health");
    let paths = h["isolation"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "paths")
        .cloned()
        .unwrap_or_default();
    assert_eq!(paths["ok"], true, "the paths layer: {paths}");
    let data = s.data_dir.path().join("data");
    let mut data_dirs = vec![data.display().to_string()];
    if let Ok(real) = data.canonicalize() {
        data_dirs.push(real.display().to_string());
    }

    const PY: &str = "def handler(e, c):\n    return {'mountinfo': open('/proc/self/mountinfo').read(), 'mounts': open('/proc/self/mounts').read(), 'code': open('app.py').read()[:3]}\n";
    const NODE: &str = "const fs = require('fs');\nexports.handler = async () => ({ mountinfo: fs.readFileSync('/proc/self/mountinfo', 'utf8'), mounts: fs.readFileSync('/proc/self/mounts', 'utf8') });\n";
    // Specialised stem cells: the code arrives by move_mount into a running sandbox.
    for (runtime, name, cfg, file) in [
        ("python", "mpy", python_cfg("app.handler"), ("app.py", PY)),
        (
            "node",
            "mnode",
            node_cfg("index.handler"),
            ("index.js", NODE),
        ),
    ] {
        wait_for_stem_cells(&s, runtime);
        let hits = stem_pool(&s, runtime)["hits"].as_u64().unwrap();
        s.deploy(name, cfg, &[file]);
        let v = s.invoke(name, "{}").ok();
        assert_eq!(
            stem_pool(&s, runtime)["hits"].as_u64().unwrap(),
            hits + 1,
            "{name} was not a stem cell"
        );
        if runtime == "python" {
            assert_eq!(v["code"], "def", "the function's own code: {v}");
        }
        check_mount_tables(&format!("{runtime} stem cell"), &v, &data_dirs);
    }

    // Fresh sandboxes: the code is bound when bwrap starts.
    let mut cfg = python_cfg("app.handler");
    cfg["env"] = json!({ "PYTHONPATH": "/var/task" });
    let hits = stem_pool(&s, "python")["hits"].clone();
    s.deploy("mpyfresh", cfg, &[("app.py", PY)]);
    let v = s.invoke("mpyfresh", "{}").ok();
    assert_eq!(stem_pool(&s, "python")["hits"], hits, "not a stem cell");
    check_mount_tables("python, fresh", &v, &data_dirs);

    s.deploy(
        "msh",
        json!({"runtime": "provided.al2023", "handler": "bootstrap"}),
        &[("bootstrap", MOUNTS_BOOTSTRAP)],
    );
    check_mount_tables("provided", &s.invoke("msh", "{}").ok(), &data_dirs);

    // Java (javac must be there, as for tests/e2e/java.rs).
    let src = tempfile::tempdir().unwrap();
    write_files(src.path(), &[("probe/Mounts.java", MOUNTS_JAVA)]);
    let out = std::process::Command::new("javac")
        .args(["--release", "17", "-d"])
        .arg(src.path().join("classes"))
        .arg(src.path().join("probe/Mounts.java"))
        .output()
        .expect("javac (a JDK) is needed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let class = std::fs::read(src.path().join("classes/probe/Mounts.class")).unwrap();
    let mut zip = std::io::Cursor::new(Vec::new());
    {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(&mut zip);
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
        w.start_file("probe/Mounts.class", opts).unwrap();
        w.write_all(&class).unwrap();
        w.finish().unwrap();
    }
    let (status, body) = s.deploy_zip(
        "mjava",
        json!({"runtime": "java17", "handler": "probe.Mounts::read", "memory_mb": 256, "timeout_s": 20}),
        &zip.into_inner(),
    );
    assert!(status < 300, "{status} {body}");
    check_mount_tables("java", &s.invoke("mjava", r#""x""#).ok(), &data_dirs);
    still_serves(&s);
}
