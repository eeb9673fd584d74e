//! Per-instance network namespaces.
//!
//! Each instance gets a network namespace of its own, created by the server before the
//! instance starts: its loopback is up and holds one listening socket, the instance's
//! Runtime API on `127.0.0.1:9001` (as on Lambda). The child joins the namespace in its
//! `pre_exec` hook (`setns`), so nothing it runs can reach the host's loopback (Nimbus's
//! own listeners, other instances' Runtime APIs, local databases). The server keeps the
//! namespace alive through a file descriptor and serves the listening socket from its
//! own threads: a socket belongs to the namespace it was created in, whichever thread
//! accepts on it.
//!
//! With the `outbound` policy a `slirp4netns` process ([`Slirp`]; or `pasta`, see
//! `egress.rs`) gives the namespace a user-mode network (`tap0`, 10.0.2.100/24, gateway
//! 10.0.2.2) with `--disable-host-loopback`, so the instance reaches other hosts but not
//! the host's 127.0.0.0/8.
//!
//! Where namespaces cannot be created (not root, no `CAP_SYS_ADMIN`), the executor falls
//! back to a Runtime API on a random host loopback port and the host network, and says so
//! once ([`probe`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the Runtime API listens inside an instance's namespace.
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";

/// How long slirp4netns may take to configure the namespace.
const SLIRP_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Can this host create per-instance network namespaces? Probed once (a namespace is
/// created and destroyed); the answer says why not when it cannot.
pub fn probe() -> Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            // On a thread of its own: the calling thread must stay in the host's namespace.
            std::thread::spawn(create_blocking)
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the probe thread panicked")))
                .map(drop)
                .map_err(|e| {
                format!("cannot create a network namespace ({e}); run nimbus as root (CAP_SYS_ADMIN) to isolate instances")
            })
        })
        .clone()
}

/// A network namespace made for one instance, with its Runtime API listener.
pub(crate) struct NetNs {
    /// Keeps the namespace alive; the child joins it with `setns`.
    fd: OwnedFd,
}

impl NetNs {
    /// Creates a namespace with `lo` up and a listener on [`RUNTIME_API_ADDR`] in it, on a
    /// thread of its own (which ends there: no thread of the server stays in the namespace).
    pub(crate) async fn create() -> io::Result<(NetNs, std::net::TcpListener)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("nimbus-netns".into())
            .spawn(move || {
                let _ = tx.send(create_blocking());
            })?;
        rx.await
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// Binds a listener on `addr` inside the namespace (on a short-lived thread that joins
    /// it): the private AWS endpoints and host services beside the Runtime API.
    pub(crate) async fn bind(
        &self,
        addr: impl std::net::ToSocketAddrs + Send + 'static,
    ) -> io::Result<std::net::TcpListener> {
        let fd = self.fd.try_clone()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("nimbus-netns".into())
            .spawn(move || {
                let bound = (|| {
                    // SAFETY: this thread joins the namespace and ends right after.
                    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    let l = std::net::TcpListener::bind(addr)?;
                    l.set_nonblocking(true)?;
                    Ok(l)
                })();
                let _ = tx.send(bound);
            })?;
        rx.await
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The namespace as a path other processes can open (`/proc/<server pid>/fd/<fd>`).
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }
}

/// Runs on a thread that is about to end: moves it into a new network namespace.
fn create_blocking() -> io::Result<(NetNs, std::net::TcpListener)> {
    // SAFETY: plain system calls on this thread; the namespace change affects it alone.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    loopback_up()?;
    let listener = std::net::TcpListener::bind(RUNTIME_API_ADDR)?;
    listener.set_nonblocking(true)?;
    let path = CString::new("/proc/thread-self/ns/net").expect("no NUL");
    // SAFETY: a valid C string; the descriptor is owned right away.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((NetNs { fd }, listener))
}

/// `ip link set lo up` in the calling thread's namespace (SIOCSIFFLAGS).
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket/ioctl on a zeroed `ifreq` naming "lo"; the socket is closed by OwnedFd.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = OwnedFd::from_raw_fd(s);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, b) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *b as libc::c_char;
        }
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A running slirp4netns attached to an instance's namespace. Dropping it ends it (it is
/// killed, and its exit pipe closes).
pub(crate) struct Slirp {
    child: tokio::process::Child,
    /// The write end of slirp4netns's `--exit-fd` pipe: closing it (or the server dying)
    /// makes it exit.
    _exit: OwnedFd,
}

impl Slirp {
    /// Starts slirp4netns for `ns` and waits until it has configured `tap0`.
    pub(crate) async fn start(program: &Path, ns: &NetNs) -> io::Result<Slirp> {
        let (ready_r, ready_w) = pipe()?;
        let (exit_r, exit_w) = pipe()?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg("--configure")
            .arg("--disable-host-loopback")
            .arg("--mtu=65520")
            .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
            .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
            .arg("--netns-type=path")
            .arg(ns.path())
            .arg("tap0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let (rfd, efd) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        // SAFETY: only async-signal-safe calls (prctl, fcntl) in the forked child.
        unsafe {
            cmd.pre_exec(move || {
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
                for fd in [rfd, efd] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let t0 = Instant::now();
        let mut child = crate::process::spawn_off_workers(cmd).await?;
        drop(ready_w);
        drop(exit_r);
        let mut ready = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_r)?;
        let mut byte = [0u8; 1];
        use tokio::io::AsyncReadExt;
        let got = tokio::time::timeout(SLIRP_READY_TIMEOUT, ready.read(&mut byte)).await;
        match got {
            Ok(Ok(1)) => {
                tracing::debug!(
                    elapsed_us = t0.elapsed().as_micros() as u64,
                    "slirp4netns ready"
                );
                // Keep reading what it says, so a full pipe never blocks it.
                if let Some(err) = child.stderr.take() {
                    tokio::spawn(async move {
                        use tokio::io::AsyncBufReadExt;
                        let mut lines = tokio::io::BufReader::new(err).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            tracing::debug!(target: "nimbus_runtime::slirp4netns", "{line}");
                        }
                    });
                }
                Ok(Slirp {
                    child,
                    _exit: exit_w,
                })
            }
            other => {
                let _ = child.start_kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(500),
                        e.read_to_string(&mut err),
                    )
                    .await;
                }
                let why = match other {
                    Err(_) => format!("not ready within {} s", SLIRP_READY_TIMEOUT.as_secs()),
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => "exited before configuring the network".into(),
                };
                Err(io::Error::other(format!(
                    "slirp4netns failed: {why}: {}",
                    err.trim()
                )))
            }
        }
    }

    /// Kills slirp4netns now.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors, owned right after.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creating and destroying a namespace (with its listener): the cold-start cost.
    /// `cargo test -p nimbus-runtime --release netns_cost -- --nocapture` prints it.
    #[tokio::test]
    async fn netns_cost() {
        if let Err(e) = probe() {
            panic!("network namespaces are needed for these tests (run as root): {e}");
        }
        let n = 200;
        let t0 = Instant::now();
        for _ in 0..n {
            let (ns, l) = NetNs::create().await.unwrap();
            assert_eq!(l.local_addr().unwrap().to_string(), RUNTIME_API_ADDR);
            drop((ns, l));
        }
        let per = t0.elapsed() / n;
        println!("create + destroy a network namespace with its listener: {per:?} each ({n} runs)");
        if let Ok(crate::egress::EgressTool::Slirp4netns(slirp)) = crate::egress::probe() {
            let n = 20;
            let t0 = Instant::now();
            for _ in 0..n {
                let (ns, _l) = NetNs::create().await.unwrap();
                let mut s = Slirp::start(&slirp, &ns).await.unwrap();
                s.kill();
            }
            println!(
                "… plus slirp4netns started and ready: {:?} each ({n} runs)",
                t0.elapsed() / n
            );
        }
    }

    /// Two namespaces both listen on 127.0.0.1:9001, and the host's loopback is not there.
    #[tokio::test]
    async fn namespaces_are_separate() {
        probe().unwrap();
        let (a, la) = NetNs::create().await.unwrap();
        let (_b, _lb) = NetNs::create().await.unwrap();
        let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host_port = host.local_addr().unwrap().port();
        let fd = a.raw_fd();
        // From inside `a`: its own API is there, the host's listener is not.
        let (own, other) = std::thread::spawn(move || {
            // SAFETY: this thread joins `a` and ends.
            assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0);
            (
                std::net::TcpStream::connect(RUNTIME_API_ADDR).is_ok(),
                std::net::TcpStream::connect(("127.0.0.1", host_port)).is_ok(),
            )
        })
        .join()
        .unwrap();
        assert!(own, "the namespace's own Runtime API is reachable");
        assert!(!other, "the host's loopback is not reachable");
        la.set_nonblocking(false).unwrap();
        la.accept().unwrap();
    }
}
