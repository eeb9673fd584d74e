//! `nimbus doctor`: checks this host the way `nimbus serve` will use it, with the server's own
//! probes (`nimbus_runtime::sandbox::probe` and the cgroup detection, the interpreters
//! resolved as the executor resolves them), plus the data dir and the listen address. One
//! row per check: ✓ / ✗ / degraded, what it means for functions, the command that fixes it.
//! Fails (exit status 1) when something the chosen `--isolation` needs is missing.
//! When a server answers at the endpoint (`--endpoint`/`NIMBUS_ENDPOINT`), its readiness
//! (`GET /v1/ready`) is one more row, `server` (reported, never failing `doctor`).

use crate::cli::DoctorArgs;
use anyhow::{Context, Result};
use nimbus_runtime::{HostInterpreters, Isolation, IsolationReport, MemoryLimits};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a check is about, which decides how much a failure matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An isolation layer: needed by `strict`, a degradation in `auto`.
    Layer,
    /// An interpreter: its functions fail without it, the others run (a warning).
    Runtime,
    /// The data dir and the listen address: `serve` cannot start without them.
    Host,
    /// Reported only (`pasta`).
    Info,
}

/// What was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Ok,
    /// Works, with a caveat (an interpreter version Nimbus does not list, little free space).
    Partial,
    Missing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Degraded,
    Missing,
    /// Not present, and not needed (report-only checks).
    Absent,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Degraded => "degraded",
            Status::Missing => "✗",
            Status::Absent => "-",
        }
    }
}

/// The status a finding gets under `mode`, and whether it makes `doctor` fail.
fn verdict(kind: Kind, found: Found, mode: Isolation) -> (Status, bool) {
    match (found, kind) {
        (Found::Ok, _) => (Status::Ok, false),
        (Found::Partial, _) => (Status::Degraded, false),
        (Found::Missing, Kind::Host) => (Status::Missing, true),
        (Found::Missing, Kind::Layer) if mode == Isolation::Strict => (Status::Missing, true),
        (Found::Missing, Kind::Layer) => (Status::Degraded, false),
        (Found::Missing, Kind::Runtime) => (Status::Missing, false),
        (Found::Missing, Kind::Info) => (Status::Absent, false),
    }
}

#[derive(Debug, Serialize)]
struct Check {
    name: String,
    status: Status,
    /// Fails `doctor` under the chosen isolation mode.
    blocking: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(
    mode: Isolation,
    kind: Kind,
    name: &str,
    found: Found,
    detail: String,
    fix: Option<&str>,
) -> Check {
    let (status, blocking) = verdict(kind, found, mode);
    Check {
        name: name.to_string(),
        status,
        blocking,
        detail,
        fix: (found != Found::Ok)
            .then_some(fix)
            .flatten()
            .map(str::to_string),
    }
}

pub async fn run(args: DoctorArgs, json: bool, server: &crate::client::Client) -> Result<()> {
    let mode: Isolation = args.isolation.parse().map_err(anyhow::Error::msg)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./.nimbus"));
    let listen = args.listen;
    let dir = data_dir.clone();
    let mut checks = tokio::task::spawn_blocking(move || collect(mode, &dir, listen))
        .await
        .context("the checks panicked")?;
    if let Some(c) = server_check(mode, server).await {
        checks.push(c);
    }
    let failing = checks.iter().filter(|c| c.blocking).count();
    if json {
        super::print_json(&serde_json::json!({
            "isolation": mode.as_str(),
            "data_dir": data_dir,
            "listen": listen.to_string(),
            "ok": failing == 0,
            "checks": checks,
        }))?;
    } else {
        super::print(render(mode, &data_dir, &listen.to_string(), &checks))?;
    }
    if failing > 0 {
        anyhow::bail!(
            "{failing} check(s) fail for --isolation {}: {}",
            mode.as_str(),
            checks
                .iter()
                .filter(|c| c.blocking)
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn collect(mode: Isolation, data_dir: &Path, listen: std::net::SocketAddr) -> Vec<Check> {
    let mut checks = sandbox_checks(mode, data_dir);
    checks.extend(runtime_checks(mode));
    checks.push(data_dir_check(mode, data_dir));
    checks.push(listen_check(mode, listen));
    checks
}

/// The isolation layers, from the probe `serve` runs at start.
fn sandbox_checks(mode: Isolation, data_dir: &Path) -> Vec<Check> {
    let memory = MemoryLimits::detect(Some(nimbus_runtime::default_max_pids()));
    // The trial sandboxes run in the data dir's file system when it exists (overlays depend
    // on it), else in the temp dir.
    let tmp = tempfile::Builder::new()
        .prefix(".doctor-")
        .tempdir_in(data_dir)
        .or_else(|_| tempfile::tempdir());
    let report = tmp.as_ref().map_err(|e| e.to_string()).and_then(|tmp| {
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
        nimbus_runtime::probe_sandbox(
            Isolation::Auto,
            &memory,
            Vec::new(),
            &scratch,
            &tmp.path().join("empty"),
        )
        .map(|(_, report)| report)
    });
    memory.remove_root();
    let mut checks = match report {
        Ok(report) => layer_checks(mode, &report),
        Err(e) => vec![check(
            mode,
            Kind::Layer,
            "sandbox",
            Found::Missing,
            format!("cannot probe the sandbox: {e}"),
            None,
        )],
    };
    let pasta = find_on_path("pasta");
    checks.push(check(
        mode,
        Kind::Info,
        "pasta",
        if pasta.is_some() {
            Found::Ok
        } else {
            Found::Missing
        },
        match pasta {
            Some(p) => format!("{} (reported only)", p.display()),
            None => "not installed (reported only; Debian package passt)".into(),
        },
        None,
    ));
    checks
}

fn layer_checks(mode: Isolation, report: &IsolationReport) -> Vec<Check> {
    let bwrap_missing = report
        .layers
        .iter()
        .any(|l| l.detail.contains("bwrap not found"));
    report
        .layers
        .iter()
        .map(|l| {
            let found = if l.ok { Found::Ok } else { Found::Missing };
            let fix = layer_fix(l.name, &l.detail, bwrap_missing);
            // The probe's own words for the consequence, when it has them.
            let meaning = l
                .detail
                .rsplit_once(": ")
                .map(|(_, m)| m)
                .filter(|m| m.starts_with("functions"))
                .unwrap_or_else(|| layer_meaning(l.name));
            let detail = if l.ok {
                l.detail.clone()
            } else if fix.is_some_and(|f| f.starts_with("apt-get")) {
                // The probe's own install hint is on the fix line: keep its first clause.
                let why = l.detail.split([':', '(']).next().unwrap_or_default().trim();
                format!("{meaning} ({why})")
            } else {
                format!("{meaning} ({})", l.detail)
            };
            check(mode, Kind::Layer, l.name, found, detail, fix)
        })
        .collect()
}

/// What a missing layer means for functions.
fn layer_meaning(name: &str) -> &'static str {
    match name {
        "namespaces" => "functions see the host's processes",
        "filesystem" => "functions see the host's files",
        "user" => "functions run with the server's uid",
        "seccomp" => "functions may call ptrace, mount, bpf, …",
        "paths" => "the code's host path shows in /proc/self/mountinfo",
        "rlimits" => "no open-file or process limit per instance",
        "memory" => "a function's memory size is not enforced",
        "pids" => "fork bombs are bounded by RLIMIT_NPROC only",
        "cpu" => "no CPU share per instance",
        "network" => "functions share the host network, loopback included",
        "egress" => "network = \"outbound\" functions get no egress",
        _ => "missing",
    }
}

/// The one command that adds a missing layer.
fn layer_fix(name: &str, detail: &str, bwrap_missing: bool) -> Option<&'static str> {
    match name {
        "egress" => Some("apt-get install slirp4netns"),
        "user" if detail.contains("setpriv") => Some("apt-get install util-linux"),
        "namespaces" | "filesystem" | "user" | "seccomp" | "paths" | "rlimits" if bwrap_missing => {
            Some("apt-get install bubblewrap")
        }
        "namespaces" | "paths" | "network" | "memory" | "pids" | "cpu" => {
            Some("run nimbus as root (sudo nimbus serve)")
        }
        _ => None,
    }
}

/// The interpreters, resolved as the server resolves them, against the runtimes Nimbus
/// accepts.
fn runtime_checks(mode: Isolation) -> Vec<Check> {
    let host = HostInterpreters::resolve();
    let go = find_on_path("go").unwrap_or_else(|| PathBuf::from("go"));
    let tools: [Tool; 5] = [
        (
            "node",
            Some(host.node),
            &["--version"],
            "nodejs",
            "apt-get install nodejs",
        ),
        (
            "python3",
            Some(host.python),
            &["--version"],
            "python",
            "apt-get install python3",
        ),
        (
            "java",
            Some(host.java),
            &["-version"],
            "java",
            "apt-get install openjdk-17-jdk-headless",
        ),
        (
            "javac",
            host.javac,
            &["-version"],
            "java",
            "apt-get install openjdk-17-jdk-headless",
        ),
        (
            "go",
            Some(go),
            &["version"],
            "go",
            "apt-get install golang-go",
        ),
    ];
    tools
        .into_iter()
        .map(|(name, path, args, family, fix)| {
            let out = path.as_ref().and_then(|p| {
                let o = Command::new(p).args(args).output().ok()?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                o.status.success().then_some(text)
            });
            let uses = runtime_use(name);
            let Some(text) = out else {
                return check(
                    mode,
                    Kind::Runtime,
                    name,
                    Found::Missing,
                    format!("not found: {uses} fail"),
                    Some(fix),
                );
            };
            let path = path.unwrap_or_default();
            let version = parse_version(&text);
            let (found, detail) = match version.map(|v| accepted(family, v)) {
                Some(Ok(id)) => (Found::Ok, format!("{id} ({}): {uses} run", path.display())),
                Some(Err(ids)) => {
                    let (major, minor) = version.unwrap_or_default();
                    (
                        Found::Partial,
                        format!(
                            "{name} {major}.{minor} ({}) is none of {ids}: {uses} run on it anyway",
                            path.display()
                        ),
                    )
                }
                None => (
                    Found::Partial,
                    format!("{} answers no version: {uses} may fail", path.display()),
                ),
            };
            check(mode, Kind::Runtime, name, found, detail, Some(fix))
        })
        .collect()
}

/// Name, resolved path, version arguments, runtime family, fix.
type Tool = (
    &'static str,
    Option<PathBuf>,
    &'static [&'static str],
    &'static str,
    &'static str,
);

fn runtime_use(tool: &str) -> &'static str {
    match tool {
        "node" => "nodejs* functions",
        "python3" => "python3.* functions",
        "java" => "java17/java21 functions",
        "javac" => "java functions (bootstrap compiled at the first cold start) and Java builds",
        _ => "`nimbus deploy` builds of Go functions",
    }
}

/// The first version number in a tool's `--version` output: `v20.11.1`, `Python 3.11.2`,
/// `openjdk version "17.0.9"`, `javac 21.0.1`, `go version go1.22.1 linux/amd64`. Java's
/// old `1.8.0_392` is 8.
fn parse_version(out: &str) -> Option<(u32, u32)> {
    for word in out.split(|c: char| c.is_whitespace() || c == '"') {
        let w = word.strip_prefix("go").unwrap_or(word);
        let w = w.strip_prefix('v').unwrap_or(w);
        let mut parts = w.split(['.', '_', '-', '+']);
        let Some(Ok(major)) = parts.next().map(str::parse::<u32>) else {
            continue;
        };
        let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if major == 1 && word.contains('.') && !word.starts_with("go") && minor >= 5 {
            // Java before 9: 1.8 is Java 8.
            return Some((minor, 0));
        }
        return Some((major, minor));
    }
    None
}

/// The runtime identifier `version` serves (`nodejs20.x`), or the accepted ones of the
/// family.
fn accepted(family: &str, (major, minor): (u32, u32)) -> Result<String, String> {
    let id = match family {
        "nodejs" => format!("nodejs{major}.x"),
        "python" => format!("python{major}.{minor}"),
        "java" => format!("java{major}"),
        _ => return Ok(format!("go {major}.{minor}")),
    };
    let ids: Vec<&str> = nimbus_core::runtime::RUNTIMES
        .iter()
        .copied()
        .filter(|r| r.starts_with(family))
        .collect();
    if ids.contains(&id.as_str()) {
        Ok(id)
    } else {
        Err(ids.join(", "))
    }
}

fn data_dir_check(mode: Isolation, dir: &Path) -> Check {
    let row = |found, detail: String, fix: Option<&str>| {
        check(mode, Kind::Host, "data dir", found, detail, fix)
    };
    let fix = Some("--data-dir DIR (a writable directory)");
    let shown = dir.display();
    let existing = match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return row(
                Found::Missing,
                format!("{shown} is not a directory: serve cannot start"),
                fix,
            )
        }
        Ok(_) => match tempfile::tempfile_in(dir) {
            Ok(_) => dir.to_path_buf(),
            Err(e) => {
                return row(
                    Found::Missing,
                    format!("{shown} is not writable ({e}): serve cannot start"),
                    fix,
                )
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // `serve` creates it: the nearest existing ancestor must take a directory.
            let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            let parent = abs
                .ancestors()
                .skip(1)
                .find(|a| a.exists())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"));
            if let Err(e) = tempfile::tempdir_in(&parent) {
                return row(
                    Found::Missing,
                    format!(
                        "{shown} cannot be created in {} ({e}): serve cannot start",
                        parent.display()
                    ),
                    fix,
                );
            }
            parent
        }
        Err(e) => {
            return row(
                Found::Missing,
                format!("{shown}: {e}: serve cannot start"),
                fix,
            )
        }
    };
    let created = if existing.as_path() == dir {
        ""
    } else {
        " (created at start)"
    };
    match fs_info(&existing) {
        Some((free, fs)) if free < LOW_SPACE => row(
            Found::Partial,
            format!(
                "{shown}{created}: writable, {fs}, only {} free: deploys and logs may fail",
                gib(free)
            ),
            Some("free space, or --data-dir on a larger file system"),
        ),
        Some((free, fs)) => row(
            Found::Ok,
            format!("{shown}{created}: writable, {fs}, {} free", gib(free)),
            None,
        ),
        None => row(Found::Ok, format!("{shown}{created}: writable"), None),
    }
}

const LOW_SPACE: u64 = 1 << 30;

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Free bytes (for an unprivileged user) and the file system's type.
fn fs_info(path: &Path) -> Option<(u64, String)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // The field types differ between targets.
    #[allow(clippy::useless_conversion)]
    let free = u64::try_from(st.f_bavail)
        .unwrap_or(0)
        .saturating_mul(u64::try_from(st.f_bsize).unwrap_or(0));
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64 as u32;
    Some((free, fs_name(magic)))
}

fn fs_name(magic: u32) -> String {
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs (lost at reboot)".into(),
        0x794C_7630 => "overlayfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0xF2F5_2010 => "f2fs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0x0102_1997 => "9p".into(),
        other => format!("file system 0x{other:x}"),
    }
}

fn listen_check(mode: Isolation, addr: std::net::SocketAddr) -> Check {
    let row = |found, detail: String, fix: Option<&str>| {
        check(mode, Kind::Host, "listen", found, detail, fix)
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => row(Found::Ok, format!("{addr} can be bound"), None),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => row(
            Found::Missing,
            format!("{addr} is in use (another nimbus?): serve cannot start"),
            Some("--listen 127.0.0.1:PORT with a free port"),
        ),
        Err(e) => row(
            Found::Missing,
            format!("cannot bind {addr} ({e}): serve cannot start"),
            Some("--listen 127.0.0.1:PORT (ports below 1024 need root)"),
        ),
    }
}

/// The readiness of the server at the endpoint, when one answers (nothing otherwise: no
/// server running is normal before `serve`).
async fn server_check(mode: Isolation, server: &crate::client::Client) -> Option<Check> {
    let (code, ready) = server
        .readiness(std::time::Duration::from_secs(3))
        .await
        .ok()?;
    Some(readiness_row(mode, server.endpoint(), code, &ready))
}

/// The `server` row from a `/v1/ready` answer: ok ✓, degraded, failing ✗ (reported only).
fn readiness_row(mode: Isolation, endpoint: &str, code: u16, ready: &serde_json::Value) -> Check {
    let status = ready["status"].as_str().unwrap_or("unknown");
    let reasons: Vec<&str> = ready["reasons"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let found = match status {
        "ok" => Found::Ok,
        "degraded" => Found::Partial,
        _ => Found::Missing,
    };
    let mut detail = format!("{endpoint}/v1/ready: {status} ({code})");
    if !reasons.is_empty() {
        detail.push_str(&format!(": {}", reasons.join("; ")));
    }
    // Like an interpreter: shown, never what makes `doctor` fail.
    check(mode, Kind::Runtime, "server", found, detail, None)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The table: one row per check, a `fix:` line under each that has one, a verdict.
fn render(mode: Isolation, data_dir: &Path, listen: &str, checks: &[Check]) -> String {
    let mut s = format!(
        "nimbus doctor: --isolation {} --data-dir {} --listen {listen}\n",
        mode.as_str(),
        data_dir.display()
    );
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        s.push_str(&format!(
            "  {:<8}  {:<width$}  {}\n",
            c.status.mark(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            s.push_str(&format!("  {:<8}  {:<width$}  fix: {fix}\n", "", ""));
        }
    }
    let failing: Vec<&str> = checks
        .iter()
        .filter(|c| c.blocking)
        .map(|c| c.name.as_str())
        .collect();
    let degraded = checks
        .iter()
        .filter(|c| !c.blocking && matches!(c.status, Status::Degraded | Status::Missing))
        .count();
    if failing.is_empty() && degraded == 0 {
        s.push_str(&format!(
            "ready: everything --isolation {} uses is here\n",
            mode.as_str()
        ));
    } else if failing.is_empty() {
        s.push_str(&format!(
            "ready for --isolation {}, with {degraded} warning(s) above\n",
            mode.as_str()
        ));
    } else {
        s.push_str(&format!(
            "NOT ready for --isolation {}: {}\n",
            mode.as_str(),
            failing.join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_each_tool() {
        assert_eq!(parse_version("v20.11.1\n"), Some((20, 11)));
        assert_eq!(parse_version("Python 3.11.2"), Some((3, 11)));
        assert_eq!(
            parse_version("openjdk version \"17.0.9\" 2023-10-17\nOpenJDK Runtime"),
            Some((17, 0))
        );
        assert_eq!(parse_version("javac 21.0.1"), Some((21, 0)));
        assert_eq!(
            parse_version("go version go1.22.1 linux/amd64"),
            Some((1, 22))
        );
        assert_eq!(
            parse_version("java version \"1.8.0_392\""),
            Some((8, 0)),
            "Java before 9"
        );
        assert_eq!(parse_version("no digits here"), None);
    }

    #[test]
    fn versions_against_the_accepted_runtimes() {
        assert_eq!(accepted("nodejs", (20, 11)), Ok("nodejs20.x".into()));
        assert_eq!(accepted("python", (3, 12)), Ok("python3.12".into()));
        assert_eq!(accepted("java", (17, 0)), Ok("java17".into()));
        let old = accepted("nodejs", (16, 0)).unwrap_err();
        assert!(old.contains("nodejs20.x"), "{old}");
        let py = accepted("python", (3, 7)).unwrap_err();
        assert!(py.contains("python3.9") && !py.contains("nodejs"), "{py}");
        assert!(accepted("java", (11, 0)).is_err());
        assert!(accepted("go", (1, 19)).is_ok(), "any Go builds a bootstrap");
    }

    #[test]
    fn verdict_per_isolation_mode() {
        use Found::*;
        use Isolation::*;
        // A missing layer: fatal for strict only.
        assert_eq!(
            verdict(Kind::Layer, Missing, Strict),
            (Status::Missing, true)
        );
        assert_eq!(
            verdict(Kind::Layer, Missing, Auto),
            (Status::Degraded, false)
        );
        assert_eq!(
            verdict(Kind::Layer, Missing, None),
            (Status::Degraded, false)
        );
        // The data dir and the port: fatal in every mode.
        for mode in [Auto, Strict, None] {
            assert_eq!(verdict(Kind::Host, Missing, mode), (Status::Missing, true));
            // A missing interpreter is a warning: the other runtimes work.
            assert_eq!(
                verdict(Kind::Runtime, Missing, mode),
                (Status::Missing, false)
            );
            assert_eq!(verdict(Kind::Info, Missing, mode), (Status::Absent, false));
            assert_eq!(verdict(Kind::Layer, Ok, mode), (Status::Ok, false));
            assert_eq!(
                verdict(Kind::Runtime, Partial, mode),
                (Status::Degraded, false)
            );
        }
    }

    #[test]
    fn fixes_name_the_debian_package() {
        assert_eq!(
            layer_fix("namespaces", "bwrap not found: install bubblewrap", true),
            Some("apt-get install bubblewrap")
        );
        assert_eq!(
            layer_fix("seccomp", "needs bwrap", true),
            Some("apt-get install bubblewrap")
        );
        assert_eq!(
            layer_fix("user", "setpriv not found: install util-linux", false),
            Some("apt-get install util-linux")
        );
        assert_eq!(
            layer_fix("egress", "slirp4netns is not installed", false),
            Some("apt-get install slirp4netns")
        );
    }

    #[test]
    fn readiness_rows() {
        let ok = readiness_row(
            Isolation::Auto,
            "http://h:1",
            200,
            &serde_json::json!({"status": "ok", "reasons": []}),
        );
        assert_eq!((ok.status, ok.blocking), (Status::Ok, false));
        assert_eq!(ok.detail, "http://h:1/v1/ready: ok (200)");
        let failing = readiness_row(
            Isolation::Strict,
            "http://h:1",
            503,
            &serde_json::json!({"status": "failing", "reasons": ["disk: almost full"]}),
        );
        assert_eq!((failing.status, failing.blocking), (Status::Missing, false));
        assert!(failing.detail.ends_with("failing (503): disk: almost full"));
    }

    #[test]
    fn a_file_is_not_a_data_dir() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let c = data_dir_check(Isolation::Auto, f.path());
        assert_eq!((c.status, c.blocking), (Status::Missing, true));
        assert!(c.detail.contains("not a directory"), "{}", c.detail);
        let d = tempfile::tempdir().unwrap();
        let c = data_dir_check(Isolation::Auto, &d.path().join("new/data"));
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
        assert!(c.detail.contains("created at start"), "{}", c.detail);
    }
}
