//! Memory limits through cgroups (v1 or v2), detected once at start.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How instance memory is limited on this host.
#[derive(Debug, Clone)]
pub enum MemoryLimits {
    /// cgroup v1 memory controller; instances live under `root/<id>`.
    V1 { root: PathBuf },
    /// cgroup v2 with the memory controller enabled for `root`'s children.
    V2 { root: PathBuf },
    /// No usable cgroup: limits are not enforced.
    Unavailable { reason: String },
}

impl MemoryLimits {
    /// Detects a writable cgroup hierarchy with the memory controller (v2 first, then v1).
    pub fn detect() -> Self {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    fn detect_at(base: &Path) -> Self {
        let mut reasons = Vec::new();
        match try_v2(base) {
            Ok(root) => return MemoryLimits::V2 { root },
            Err(e) => reasons.push(format!("cgroup v2: {e}")),
        }
        match try_v1(base) {
            Ok(root) => return MemoryLimits::V1 { root },
            Err(e) => reasons.push(format!("cgroup v1: {e}")),
        }
        MemoryLimits::Unavailable {
            reason: reasons.join("; "),
        }
    }

    /// Short name for logs and the health endpoint.
    pub fn describe(&self) -> &'static str {
        match self {
            MemoryLimits::V1 { .. } => "cgroup-v1",
            MemoryLimits::V2 { .. } => "cgroup-v2",
            MemoryLimits::Unavailable { .. } => "none",
        }
    }

    /// Removes this server's cgroup subtree (at shutdown, once every instance has stopped).
    pub fn remove_root(&self) {
        if let MemoryLimits::V1 { root } | MemoryLimits::V2 { root } = self {
            remove_tree(root);
        }
    }

    /// Creates the cgroup of one instance with a memory limit of `limit_bytes`.
    pub(crate) fn create(&self, id: &str, limit_bytes: u64) -> io::Result<Option<Cgroup>> {
        let (root, v2) = match self {
            MemoryLimits::V1 { root } => (root, false),
            MemoryLimits::V2 { root } => (root, true),
            MemoryLimits::Unavailable { .. } => return Ok(None),
        };
        let dir = root.join(id);
        fs::create_dir(&dir)?;
        let cg = Cgroup {
            procs: CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())?,
            dir,
            v2,
        };
        let limit = limit_bytes.to_string();
        let res = if v2 {
            fs::write(cg.dir.join("memory.max"), &limit)
                .and_then(|_| fs::write(cg.dir.join("memory.swap.max"), "0").or(Ok(())))
        } else {
            fs::write(cg.dir.join("memory.limit_in_bytes"), &limit).and_then(|_| {
                let memsw = cg.dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    fs::write(memsw, &limit)?;
                }
                Ok(())
            })
        };
        if let Err(e) = res {
            cg.remove();
            return Err(e);
        }
        Ok(Some(cg))
    }
}

fn try_v2(base: &Path) -> io::Result<PathBuf> {
    let controllers = fs::read_to_string(base.join("cgroup.controllers"))?;
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(io::Error::other("memory controller not available"));
    }
    let top = base.join("nimbus");
    ensure_dir(&top)?;
    // Enable memory for our subtree (requires the parent to delegate it).
    fs::write(base.join("cgroup.subtree_control"), "+memory")?;
    fs::write(top.join("cgroup.subtree_control"), "+memory")?;
    cleanup_stale(&top);
    let root = server_root(&top);
    ensure_dir(&root)?;
    fs::write(root.join("cgroup.subtree_control"), "+memory")?;
    Ok(root)
}

fn try_v1(base: &Path) -> io::Result<PathBuf> {
    let mem = base.join("memory");
    if !mem.join("memory.limit_in_bytes").exists() {
        return Err(io::Error::other("memory hierarchy not mounted"));
    }
    let top = mem.join("nimbus");
    ensure_dir(&top)?;
    cleanup_stale(&top);
    let root = server_root(&top);
    ensure_dir(&root)?;
    // Prove we can create and configure a child.
    let probe = root.join(format!("probe-{}", std::process::id()));
    ensure_dir(&probe)?;
    let ok = fs::write(probe.join("memory.limit_in_bytes"), "134217728");
    let _ = fs::remove_dir(&probe);
    ok?;
    Ok(root)
}

fn ensure_dir(p: &Path) -> io::Result<()> {
    match fs::create_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Each server process gets its own subtree, so servers sharing a host never touch each
/// other's instance cgroups.
fn server_root(top: &Path) -> PathBuf {
    top.join(format!("srv-{}", std::process::id()))
}

/// Removes the subtrees of servers that are no longer running (left by a `kill -9`).
/// Their instances died with them (`PR_SET_PDEATHSIG`), so the cgroups are empty.
fn cleanup_stale(top: &Path) {
    let Ok(entries) = fs::read_dir(top) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("srv-")) else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        remove_tree(&e.path());
    }
}

/// Removes a cgroup directory and its child cgroups (only directories can be removed).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The cgroup of one instance.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, prepared before fork so the child can join without allocating.
    procs: CString,
    v2: bool,
}

impl Cgroup {
    /// Path of `cgroup.procs` as a C string, for the child to write `0` into before exec.
    pub(crate) fn procs_path(&self) -> &CString {
        &self.procs
    }

    /// Peak memory use of the instance in bytes.
    pub(crate) fn peak_bytes(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the kernel OOM-killed a process of this cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines().any(|l| {
            let mut it = l.split_whitespace();
            it.next() == Some("oom_kill")
                && it.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0
        })
    }

    pub(crate) fn remove(&self) {
        // The directory can be removed only once its processes are gone; retry briefly.
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        tracing::warn!(dir = %self.dir.display(), "could not remove instance cgroup");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_on_empty_tree() {
        let dir = tempfile::tempdir().unwrap();
        let m = MemoryLimits::detect_at(dir.path());
        assert_eq!(m.describe(), "none");
        assert!(m.create("x", 1 << 27).unwrap().is_none());
    }

    #[test]
    fn v1_layout_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mem = dir.path().join("memory");
        fs::create_dir(&mem).unwrap();
        fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712").unwrap();
        let m = MemoryLimits::detect_at(dir.path());
        assert_eq!(m.describe(), "cgroup-v1");
        let root = mem.join(format!("nimbus/srv-{}", std::process::id()));
        let cg = m.create("inst1", 128 << 20).unwrap().unwrap();
        let limit = fs::read_to_string(root.join("inst1/memory.limit_in_bytes")).unwrap();
        assert_eq!(limit, "134217728");
        // A plain directory tree has no cgroup semantics: empty the directory first.
        let _ = fs::remove_file(root.join("inst1/memory.limit_in_bytes"));
        cg.remove();
        assert!(!root.join("inst1").exists());
    }

    #[test]
    fn stale_server_subtrees_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("nimbus");
        // pid 0 is never a live process id: its subtree is stale.
        fs::create_dir_all(top.join("srv-0/inst")).unwrap();
        let live = top.join(format!("srv-{}", std::process::id()));
        fs::create_dir_all(live.join("inst")).unwrap();
        cleanup_stale(&top);
        assert!(!top.join("srv-0").exists());
        assert!(
            live.join("inst").exists(),
            "a running server's subtree is left alone"
        );
    }
}
