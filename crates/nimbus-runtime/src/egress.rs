//! Egress for instances with `network = "outbound"`: a user-mode network attached to the
//! instance's namespace by `slirp4netns` or, when it is missing, `pasta` (Debian's
//! `passt` package). Both give the namespace one interface, 10.0.2.100/24 with the gateway
//! 10.0.2.2, and neither lets the instance reach the host's loopback. With neither, the
//! executor runs outbound instances on the host network (`--isolation auto`, warned at
//! start and reported as the missing `egress` layer) or refuses to start (`strict`).

use crate::netns::{NetNs, Slirp};
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The command that installs what is missing.
pub const INSTALL: &str = "apt-get install slirp4netns";

/// How long the tool may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The program that gives outbound instances their network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressTool {
    Slirp4netns(PathBuf),
    Pasta(PathBuf),
}

impl std::fmt::Display for EgressTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EgressTool::Slirp4netns(p) => write!(f, "slirp4netns ({})", p.display()),
            EgressTool::Pasta(p) => write!(f, "pasta ({})", p.display()),
        }
    }
}

/// slirp4netns if it runs, else pasta if it runs (probed once). `NIMBUS_SLIRP4NETNS` and
/// `NIMBUS_PASTA` name the programs instead of `PATH`. The error says what to install.
pub fn probe() -> Result<EgressTool, String> {
    static PROBE: OnceLock<Result<EgressTool, String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let slirp = find("slirp4netns", "NIMBUS_SLIRP4NETNS", "slirp4netns");
            let slirp_err = match slirp {
                Ok(p) => return Ok(EgressTool::Slirp4netns(p)),
                Err(e) => e,
            };
            match find("pasta", "NIMBUS_PASTA", "passt") {
                Ok(p) => Ok(EgressTool::Pasta(p)),
                Err(pasta_err) if slirp_err.contains("not installed") => Err(format!(
                    "neither slirp4netns nor pasta is installed ({INSTALL}, or apt-get install passt); {pasta_err}"
                )),
                Err(_) => Err(slirp_err),
            }
        })
        .clone()
}

/// `program` from `env_var`, else from `PATH`, checked by running it with `--version`.
fn find(program: &str, env_var: &str, package: &str) -> Result<PathBuf, String> {
    let path_env = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let found = std::env::var_os(env_var).map(PathBuf::from).or_else(|| {
        std::env::split_paths(&path_env)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    let Some(path) = found else {
        return Err(format!("{program} is not installed"));
    };
    match std::process::Command::new(&path)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(path),
        Ok(s) => Err(format!(
            "{} --version failed ({s}): reinstall it (apt-get install --reinstall {package})",
            path.display()
        )),
        Err(e) => Err(format!(
            "cannot run {} ({e}): install it (apt-get install {package})",
            path.display()
        )),
    }
}

/// A running egress process attached to one instance's namespace; killed with it.
pub(crate) enum Egress {
    Slirp(Slirp),
    Pasta(Pasta),
}

impl Egress {
    /// Starts `tool` for `ns` and waits until the namespace's network is configured.
    pub(crate) async fn start(tool: &EgressTool, ns: &NetNs) -> io::Result<Egress> {
        match tool {
            EgressTool::Slirp4netns(p) => Slirp::start(p, ns).await.map(Egress::Slirp),
            EgressTool::Pasta(p) => Pasta::start(p, ns).await.map(Egress::Pasta),
        }
    }

    pub(crate) fn kill(&mut self) {
        match self {
            Egress::Slirp(s) => s.kill(),
            Egress::Pasta(p) => p.kill(),
        }
    }
}

/// `pasta` in the foreground, attached to a namespace it inherits: the same addresses as
/// slirp4netns, no port forwarding in either direction (`-t/-u/-T/-U none`), the gateway
/// not mapped to the host (`--no-map-gw`), IPv4 only. It stays root (`--runas 0`: as
/// `nobody` it cannot open the namespace's `/proc` path, and a credential change would
/// clear its parent-death signal, which ends it with the server).
pub(crate) struct Pasta {
    child: tokio::process::Child,
}

impl Pasta {
    async fn start(program: &Path, ns: &NetNs) -> io::Result<Pasta> {
        // The namespace reaches pasta as an inherited descriptor: it cannot open the
        // server's `/proc/<pid>/fd/<fd>` once it has dropped its capabilities.
        let fd = ns.raw_fd();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(["--config-net", "--netns"])
            .arg(format!("/proc/self/fd/{fd}"))
            .args([
                "--netns-only",
                "--ipv4-only",
                "--address",
                "10.0.2.100",
                "--netmask",
                "24",
                "--gateway",
                "10.0.2.2",
                "--no-map-gw",
                "--tcp-ports",
                "none",
                "--udp-ports",
                "none",
                "--tcp-ns",
                "none",
                "--udp-ns",
                "none",
                "--foreground",
                "--quiet",
                "--runas",
                "0",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (prctl, fcntl) in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let t0 = Instant::now();
        let mut child = crate::process::spawn_off_workers(cmd).await?;
        // pasta has no readiness signal: wait for the default route it configures.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("nimbus-pasta".into())
            .spawn(move || {
                let _ = tx.send(wait_for_default_route(fd, READY_TIMEOUT));
            })?;
        let ready = tokio::select! {
            r = rx => r.unwrap_or_else(|_| Err(io::Error::other("the wait thread panicked"))),
            status = child.wait() => Err(io::Error::other(match status {
                Ok(s) => format!("exited ({s}) before configuring the network"),
                Err(e) => e.to_string(),
            })),
        };
        let err = child.stderr.take();
        match ready {
            Ok(()) => {
                tracing::debug!(elapsed_us = t0.elapsed().as_micros() as u64, "pasta ready");
                if let Some(err) = err {
                    tokio::spawn(async move {
                        use tokio::io::AsyncBufReadExt;
                        let mut lines = tokio::io::BufReader::new(err).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            tracing::debug!(target: "nimbus_runtime::pasta", "{line}");
                        }
                    });
                }
                Ok(Pasta { child })
            }
            Err(why) => {
                let _ = child.start_kill();
                let mut said = String::new();
                if let Some(mut e) = err {
                    use tokio::io::AsyncReadExt;
                    let _ = tokio::time::timeout(
                        Duration::from_millis(500),
                        e.read_to_string(&mut said),
                    )
                    .await;
                }
                Err(io::Error::other(format!(
                    "pasta failed: {why}: {}",
                    said.trim()
                )))
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// On the calling thread, which must be about to end: joins the namespace `fd` and polls
/// its routing table until it has a default route, for at most `timeout`.
fn wait_for_default_route(fd: RawFd, timeout: Duration) -> io::Result<()> {
    // SAFETY: the namespace change affects this thread alone, which ends after this.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let routes = std::fs::read_to_string("/proc/thread-self/net/route")?;
        if has_default_route(&routes) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "no route within {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Does `/proc/net/route` list a default route (destination and mask 0)?
fn has_default_route(routes: &str) -> bool {
    routes.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 7 && f[1] == "00000000" && f[7] == "00000000"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_is_found() {
        let none = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n";
        assert!(!has_default_route(none));
        let link = format!("{none}eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n");
        assert!(!has_default_route(&link));
        let def = format!("{link}eth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\n");
        assert!(has_default_route(&def));
    }

    /// pasta, where installed, configures a fresh namespace and dies with its handle.
    #[tokio::test]
    async fn pasta_configures_a_namespace() {
        let Ok(program) = find("pasta", "NIMBUS_PASTA", "passt") else {
            panic!("pasta is needed for this test: apt-get install passt");
        };
        crate::netns::probe().expect("network namespaces (run as root)");
        let (ns, _l) = NetNs::create().await.unwrap();
        let mut p = Pasta::start(&program, &ns).await.unwrap();
        let pid = p.child.id().unwrap();
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        p.kill();
        let _ = p.child.wait().await;
    }
}
