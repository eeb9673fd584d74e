//! Instance limits through cgroups (v1 or v2), detected once at start: memory (always,
//! when cgroups are usable), and where available the number of processes (`pids.max`) and
//! a CPU share proportional to memory (v1 `cpu.shares`, v2 `cpu.weight`; shares, not a
//! hard quota).
//!
//! Processes are bounded twice: each instance has `pids.max` [`PIDS_MAX`], and the
//! server's own subtree (every instance and stem cell together) has `pids.max` from
//! `--max-pids` (default [`default_max_pids`]: half the host's), so no combination of
//! functions can use up the host's PIDs. An instance left with many tasks after an
//! invocation is recycled ([`recycle_reason`]).

use crate::memory::{read_u64, read_u64_at};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How instance memory is limited on this host.
#[derive(Debug, Clone)]
pub enum MemoryLimits {
    /// cgroup v1 memory controller; instances live under `root/<id>` (and under
    /// `pids/<id>`, `cpu/<id>` of those hierarchies when they are usable).
    V1 {
        root: PathBuf,
        pids: Option<PathBuf>,
        cpu: Option<PathBuf>,
        /// The `pids.max` of this server's subtree (`--max-pids`), once it is set.
        pids_budget: Option<u64>,
    },
    /// cgroup v2 with the memory controller (and `pids`, `cpu` when enabled) for `root`'s
    /// children.
    V2 {
        root: PathBuf,
        pids: bool,
        cpu: bool,
        /// The `pids.max` of `root` (`--max-pids`), once it is set.
        pids_budget: Option<u64>,
    },
    /// No usable cgroup: limits are not enforced.
    Unavailable { reason: String },
}

impl MemoryLimits {
    /// Detects a writable cgroup hierarchy with the memory controller (v2 first, then v1)
    /// and, with the `pids` controller, sets `max_pids` as the `pids.max` of this server's
    /// subtree.
    pub fn detect(max_pids: Option<u64>) -> Self {
        Self::detect_at(Path::new("/sys/fs/cgroup"), max_pids)
    }

    fn detect_at(base: &Path, max_pids: Option<u64>) -> Self {
        let mut reasons = Vec::new();
        let budget = |dir: &Path| {
            let max = max_pids?;
            match fs::write(dir.join("pids.max"), max.to_string()) {
                Ok(()) => Some(max),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot set the server's process budget (--max-pids {max}): {e}; only each instance's own pids.max applies");
                    None
                }
            }
        };
        match try_v2(base) {
            Ok((root, pids, cpu)) => {
                let pids_budget = if pids { budget(&root) } else { None };
                return MemoryLimits::V2 {
                    root,
                    pids,
                    cpu,
                    pids_budget,
                };
            }
            Err(e) => reasons.push(format!("cgroup v2: {e}")),
        }
        match try_v1_controller(base, "memory", "memory.limit_in_bytes", "134217728") {
            Ok(root) => {
                let pids = try_v1_controller(base, "pids", "pids.max", "max").ok();
                return MemoryLimits::V1 {
                    root,
                    pids_budget: pids.as_deref().and_then(budget),
                    pids,
                    cpu: try_v1_controller(base, "cpu", "cpu.shares", "1024").ok(),
                };
            }
            Err(e) => reasons.push(format!("cgroup v1: {e}")),
        }
        MemoryLimits::Unavailable {
            reason: reasons.join("; "),
        }
    }

    /// Whether instances get the `pids` controller (their own `pids.max`).
    pub fn has_pids(&self) -> bool {
        match self {
            MemoryLimits::V1 { pids, .. } => pids.is_some(),
            MemoryLimits::V2 { pids, .. } => *pids,
            MemoryLimits::Unavailable { .. } => false,
        }
    }

    /// The `pids.max` of this server's subtree (`--max-pids`), when it is enforced.
    pub fn pids_budget(&self) -> Option<u64> {
        match self {
            MemoryLimits::V1 { pids_budget, .. } | MemoryLimits::V2 { pids_budget, .. } => {
                *pids_budget
            }
            MemoryLimits::Unavailable { .. } => None,
        }
    }

    /// Tasks in this server's subtree now, with its budget: `(pids.current, pids.max)`.
    pub fn server_tasks(&self) -> Option<(u64, u64)> {
        Some((read_u64(&self.server_pids_current()?)?, self.pids_budget()?))
    }

    /// `pids.current` of this server's subtree: where the budget is counted.
    fn server_pids_current(&self) -> Option<PathBuf> {
        match self {
            MemoryLimits::V1 {
                pids: Some(p),
                pids_budget: Some(_),
                ..
            } => Some(p.join("pids.current")),
            MemoryLimits::V2 {
                root,
                pids: true,
                pids_budget: Some(_),
                ..
            } => Some(root.join("pids.current")),
            _ => None,
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

    /// Removes this server's cgroup subtrees (at shutdown, once no instance can start any
    /// more and every instance was stopped). A process still in them (an instance whose
    /// invocation outlived the shutdown grace) is killed first.
    pub fn remove_root(&self) {
        match self {
            MemoryLimits::V1 {
                root, pids, cpu, ..
            } => {
                for r in [Some(root), pids.as_ref(), cpu.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    kill_and_remove(r);
                }
            }
            MemoryLimits::V2 { root, .. } => kill_and_remove(root),
            MemoryLimits::Unavailable { .. } => {}
        }
    }

    /// The isolation layers these cgroups provide (`memory`, `pids`, `cpu`).
    pub fn layers(&self) -> Vec<crate::sandbox::Layer> {
        use crate::sandbox::Layer;
        let fix = "run as root on a host with cgroups";
        let (mem, pids, cpu) = match self {
            MemoryLimits::V1 { pids, cpu, .. } => (true, pids.is_some(), cpu.is_some()),
            MemoryLimits::V2 { pids, cpu, .. } => (true, *pids, *cpu),
            MemoryLimits::Unavailable { .. } => (false, false, false),
        };
        let pids_what = match self.pids_budget() {
            Some(b) => format!("pids.max {PIDS_MAX} per instance, {b} for the server"),
            None => format!("pids.max {PIDS_MAX} per instance, no server budget"),
        };
        let layer = |name, ok, what: &str| {
            if ok {
                Layer::ok(name, format!("{} ({what})", self.describe()))
            } else {
                Layer::missing(name, format!("no {name} cgroup: {fix}"))
            }
        };
        vec![
            layer("memory", mem, "the function's memory size"),
            layer("pids", pids, &pids_what),
            layer("cpu", cpu, "a CPU share proportional to memory"),
        ]
    }

    /// Creates the cgroup of one instance with a memory limit of `limit_bytes`, and, where
    /// available, `pids.max` and a CPU share proportional to the memory.
    pub(crate) fn create(&self, id: &str, limit_bytes: u64) -> io::Result<Option<Cgroup>> {
        let mb = limit_bytes >> 20;
        let (dir, v2) = match self {
            MemoryLimits::V1 { root, .. } => (root.join(id), false),
            MemoryLimits::V2 { root, .. } => (root.join(id), true),
            MemoryLimits::Unavailable { .. } => return Ok(None),
        };
        fs::create_dir(&dir)?;
        let mut cg = Cgroup {
            procs: vec![CString::new(
                dir.join("cgroup.procs").as_os_str().as_bytes(),
            )?],
            dir,
            extra: Vec::new(),
            v2,
            pids_current: None,
            server_pids: self.server_pids_current().zip(self.pids_budget()),
        };
        let limit = limit_bytes.to_string();
        let res = (|| -> io::Result<()> {
            match self {
                MemoryLimits::V2 { pids, cpu, .. } => {
                    fs::write(cg.dir.join("memory.max"), &limit)?;
                    let _ = fs::write(cg.dir.join("memory.swap.max"), "0");
                    if *pids {
                        fs::write(cg.dir.join("pids.max"), PIDS_MAX.to_string())?;
                        cg.pids_current = Some(fs::File::open(cg.dir.join("pids.current"))?);
                    }
                    if *cpu {
                        fs::write(cg.dir.join("cpu.weight"), cpu_weight(mb).to_string())?;
                    }
                }
                MemoryLimits::V1 { pids, cpu, .. } => {
                    fs::write(cg.dir.join("memory.limit_in_bytes"), &limit)?;
                    let memsw = cg.dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        fs::write(memsw, &limit)?;
                    }
                    if let Some(p) = pids {
                        let d = p.join(id);
                        fs::create_dir(&d)?;
                        cg.extra.push(d.clone());
                        cg.procs
                            .push(CString::new(d.join("cgroup.procs").as_os_str().as_bytes())?);
                        fs::write(d.join("pids.max"), PIDS_MAX.to_string())?;
                        cg.pids_current = Some(fs::File::open(d.join("pids.current"))?);
                    }
                    if let Some(c) = cpu {
                        let d = c.join(id);
                        fs::create_dir(&d)?;
                        cg.extra.push(d.clone());
                        cg.procs
                            .push(CString::new(d.join("cgroup.procs").as_os_str().as_bytes())?);
                        fs::write(d.join("cpu.shares"), cpu_shares(mb).to_string())?;
                    }
                }
                MemoryLimits::Unavailable { .. } => {}
            }
            Ok(())
        })();
        if let Err(e) = res {
            cg.remove();
            return Err(e);
        }
        Ok(Some(cg))
    }
}

/// Processes and threads of one instance.
pub const PIDS_MAX: u32 = 1024;

/// An instance with at least this many tasks (processes, threads, zombies) after an
/// invocation is recycled: half its `pids.max`. A runtime needs a handful to a few dozen
/// (Python 1–3, Node about 11, a JVM 20–40), so this is far above any function that
/// cleans up after itself, while it still leaves the next invocation at least half the
/// limit to start threads and processes with. Measured once per invocation, so a
/// function that keeps more than this between calls gets a fresh instance each time:
/// slower, never broken.
pub const RECYCLE_TASKS: u64 = PIDS_MAX as u64 / 2;

/// When the server's subtree has used three quarters of `--max-pids`, an instance that
/// keeps more than this many tasks after an invocation is recycled too: otherwise many
/// instances each under [`RECYCLE_TASKS`] could hold the whole budget between calls and
/// leave no room for any other function to start a process or an instance.
pub const RECYCLE_TASKS_UNDER_PRESSURE: u64 = 128;

/// Why an instance with `tasks` tasks after an invocation must not be reused, if it must
/// not. `server` reads the server subtree's tasks and budget (`pids.current`,
/// `pids.max`); it is called only when the instance is above
/// [`RECYCLE_TASKS_UNDER_PRESSURE`].
pub(crate) fn recycle_reason(
    tasks: u64,
    server: impl FnOnce() -> Option<(u64, u64)>,
) -> Option<String> {
    if tasks >= RECYCLE_TASKS {
        return Some(format!(
            "{tasks} tasks remain after the invocation (its limit is {PIDS_MAX})"
        ));
    }
    if tasks > RECYCLE_TASKS_UNDER_PRESSURE {
        if let Some((used, max)) = server() {
            if used.saturating_mul(4) >= max.saturating_mul(3) {
                return Some(format!(
                    "{tasks} tasks remain after the invocation while the server uses {used} of its {max} (--max-pids)"
                ));
            }
        }
    }
    None
}

/// The default `--max-pids`: half the host's task limit (`kernel.pid_max`, or
/// `kernel.threads-max` when that is lower).
pub fn default_max_pids() -> u64 {
    max_pids_for(
        read_u64(Path::new("/proc/sys/kernel/pid_max")),
        read_u64(Path::new("/proc/sys/kernel/threads-max")),
    )
}

/// Half of the lower of `pid_max` and `threads_max` (the kernel's default `pid_max`,
/// 32768, when neither can be read); at least 1.
fn max_pids_for(pid_max: Option<u64>, threads_max: Option<u64>) -> u64 {
    let host = match (pid_max, threads_max) {
        (Some(p), Some(t)) => p.min(t),
        (Some(n), None) | (None, Some(n)) => n,
        (None, None) => 32_768,
    };
    (host / 2).max(1)
}

/// v1 `cpu.shares`: 1024 (the default of every other cgroup) per 1769 MB, Lambda's
/// memory for one vCPU; at least 2 (the kernel's minimum).
pub(crate) fn cpu_shares(memory_mb: u64) -> u64 {
    (memory_mb * 1024 / 1769).max(2)
}

/// v2 `cpu.weight` (default 100, range 1–10000): 100 per 1769 MB.
pub(crate) fn cpu_weight(memory_mb: u64) -> u64 {
    (memory_mb * 100 / 1769).clamp(1, 10_000)
}

/// A v1 hierarchy (`memory`, `pids`, `cpu`) where this server can create and configure
/// children: it proves it by writing `value` to `file` of a probe child.
fn try_v1_controller(base: &Path, name: &str, file: &str, value: &str) -> io::Result<PathBuf> {
    let h = base.join(name);
    if !h.join("cgroup.procs").exists() {
        return Err(io::Error::other(format!("{name} hierarchy not mounted")));
    }
    let top = h.join("nimbus");
    ensure_dir(&top)?;
    cleanup_stale(&top);
    let root = server_root(&top);
    ensure_dir(&root)?;
    let probe = root.join(format!("probe-{}", std::process::id()));
    ensure_dir(&probe)?;
    let ok = fs::write(probe.join(file), value);
    let _ = fs::remove_dir(&probe);
    ok?;
    Ok(root)
}

fn try_v2(base: &Path) -> io::Result<(PathBuf, bool, bool)> {
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
    // pids and cpu where the parent delegates them.
    let enable = |c: &str| {
        controllers.split_whitespace().any(|x| x == c)
            && [base, top.as_path(), root.as_path()]
                .iter()
                .all(|d| fs::write(d.join("cgroup.subtree_control"), format!("+{c}")).is_ok())
    };
    let pids = enable("pids");
    let cpu = enable("cpu");
    Ok((root, pids, cpu))
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
        remove_stale(&e.path());
    }
}

/// Removes a dead server's subtree, killing the processes still in it first. Instances
/// die with their server (parent-death signals), except a sandbox caught mid-start: when
/// a server is killed while bubblewrap sets one up, bubblewrap's child waits for its
/// parent's go-ahead before it asks for a parent-death signal, and would wait for ever.
fn remove_stale(dir: &Path) {
    kill_and_remove(dir);
}

/// Kills every process in the cgroup tree `dir` (until none is left, at most ~0.5 s) and
/// removes the tree.
fn kill_and_remove(dir: &Path) {
    for _ in 0..50 {
        if kill_tree(dir) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    remove_tree(dir);
}

/// Sends SIGKILL to every process in the cgroup `dir` and its descendants; returns how
/// many were signalled.
fn kill_tree(dir: &Path) -> usize {
    let mut n = kill_procs(dir);
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += kill_tree(&e.path());
            }
        }
    }
    n
}

/// Sends SIGKILL to every process listed in `dir/cgroup.procs`; returns how many were
/// signalled. Processes outside this server's PID namespace (and its descendants, where
/// sandboxes live) read as pid 0 there and are never signalled.
fn kill_procs(dir: &Path) -> usize {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0)
        .filter(|&pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        })
        .count()
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
    /// The memory cgroup (v2: the only one).
    dir: PathBuf,
    /// v1: the instance's cgroups in the other hierarchies (pids, cpu).
    extra: Vec<PathBuf>,
    /// Each `cgroup.procs`, prepared before fork so the child can join without allocating.
    procs: Vec<CString>,
    v2: bool,
    /// The instance's `pids.current`, kept open: read after every invocation.
    pids_current: Option<fs::File>,
    /// The server subtree's `pids.current` and `pids.max` (`--max-pids`).
    server_pids: Option<(PathBuf, u64)>,
}

impl Cgroup {
    /// Paths of `cgroup.procs` as C strings, for the child to write `0` into before exec.
    pub(crate) fn procs_paths(&self) -> &[CString] {
        &self.procs
    }

    /// A probe of the instance's memory counters (see [`crate::MemoryProbe`]).
    pub(crate) fn probe_dir(&self) -> (PathBuf, bool) {
        (self.dir.clone(), self.v2)
    }

    /// Sets a new memory limit and the CPU share that goes with it (a stem cell taking
    /// the memory size of the function it becomes).
    pub(crate) fn resize(&self, limit_bytes: u64) -> io::Result<()> {
        let mb = limit_bytes >> 20;
        let limit = limit_bytes.to_string();
        if self.v2 {
            fs::write(self.dir.join("memory.max"), &limit)?;
            let weight = self.dir.join("cpu.weight");
            if weight.exists() {
                fs::write(weight, cpu_weight(mb).to_string())?;
            }
            return Ok(());
        }
        // v1: memory+swap may never be below memory; order the writes accordingly.
        let mem = self.dir.join("memory.limit_in_bytes");
        let memsw = self.dir.join("memory.memsw.limit_in_bytes");
        let growing = read_u64(&mem).is_none_or(|cur| limit_bytes >= cur);
        if growing && memsw.exists() {
            fs::write(&memsw, &limit)?;
        }
        fs::write(&mem, &limit)?;
        if !growing && memsw.exists() {
            fs::write(&memsw, &limit)?;
        }
        for d in &self.extra {
            let shares = d.join("cpu.shares");
            if shares.exists() {
                fs::write(shares, cpu_shares(mb).to_string())?;
            }
        }
        Ok(())
    }

    /// Tasks (processes, threads and zombies) in the instance now, with the pids
    /// controller: one `pread` of its `pids.current`.
    pub(crate) fn tasks(&self) -> Option<u64> {
        read_u64_at(self.pids_current.as_ref()?)
    }

    /// Why this instance must not be reused after an invocation (see [`recycle_reason`]).
    pub(crate) fn recycle_reason(&self) -> Option<String> {
        recycle_reason(self.tasks()?, || {
            let (path, max) = self.server_pids.as_ref()?;
            Some((read_u64(path)?, *max))
        })
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

    /// SIGKILLs every process left in the instance's cgroup (forks that left its
    /// process group).
    pub(crate) fn kill_all(&self) {
        kill_procs(&self.dir);
    }

    pub(crate) fn remove(&self) {
        for dir in std::iter::once(&self.dir).chain(&self.extra) {
            // The directory can be removed only once its processes are gone; retry briefly.
            let mut gone = false;
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => {
                        gone = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        gone = true;
                        break;
                    }
                    Err(_) => {
                        self.kill_all();
                        std::thread::sleep(std::time::Duration::from_millis(10))
                    }
                }
            }
            if !gone {
                tracing::warn!(dir = %dir.display(), "could not remove instance cgroup");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_share_follows_memory() {
        assert_eq!(cpu_shares(1769), 1024);
        assert_eq!(cpu_shares(128), 74);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_weight(1769), 100);
        assert_eq!(cpu_weight(128), 7);
        assert_eq!(cpu_weight(10240), 578);
    }

    #[test]
    fn unavailable_on_empty_tree() {
        let dir = tempfile::tempdir().unwrap();
        let m = MemoryLimits::detect_at(dir.path(), None);
        assert_eq!(m.describe(), "none");
        assert!(m.create("x", 1 << 27).unwrap().is_none());
    }

    #[test]
    fn v1_layout_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mem = dir.path().join("memory");
        fs::create_dir(&mem).unwrap();
        fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712").unwrap();
        fs::write(mem.join("cgroup.procs"), "").unwrap();
        let m = MemoryLimits::detect_at(dir.path(), None);
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
    fn v1_server_gets_its_process_budget() {
        let dir = tempfile::tempdir().unwrap();
        for (h, file, value) in [
            ("memory", "memory.limit_in_bytes", "9223372036854771712"),
            ("pids", "pids.max", "max"),
        ] {
            let d = dir.path().join(h);
            fs::create_dir(&d).unwrap();
            fs::write(d.join(file), value).unwrap();
            fs::write(d.join("cgroup.procs"), "").unwrap();
        }
        let m = MemoryLimits::detect_at(dir.path(), Some(700));
        assert!(m.has_pids());
        assert_eq!(m.pids_budget(), Some(700));
        let srv = dir
            .path()
            .join(format!("pids/nimbus/srv-{}", std::process::id()));
        assert_eq!(fs::read_to_string(srv.join("pids.max")).unwrap(), "700");
        let pids = m.layers().into_iter().find(|l| l.name == "pids").unwrap();
        assert!(pids.ok, "{pids:?}");
        assert!(pids.detail.contains("700 for the server"), "{pids:?}");

        // Without a budget the subtree keeps the kernel's `max`.
        let m = MemoryLimits::detect_at(dir.path(), None);
        assert_eq!(m.pids_budget(), None);
    }

    #[test]
    fn without_the_pids_controller_there_is_no_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mem = dir.path().join("memory");
        fs::create_dir(&mem).unwrap();
        fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712").unwrap();
        fs::write(mem.join("cgroup.procs"), "").unwrap();
        let m = MemoryLimits::detect_at(dir.path(), Some(700));
        assert!(!m.has_pids());
        assert_eq!(m.pids_budget(), None);
        let pids = m.layers().into_iter().find(|l| l.name == "pids").unwrap();
        assert!(!pids.ok, "{pids:?}");
    }

    #[test]
    fn the_default_budget_is_half_the_hosts_tasks() {
        assert_eq!(max_pids_for(Some(32_768), Some(192_739)), 16_384);
        assert_eq!(max_pids_for(Some(4_194_304), Some(100_000)), 50_000);
        assert_eq!(max_pids_for(None, Some(1_000)), 500);
        assert_eq!(max_pids_for(None, None), 16_384);
        assert_eq!(max_pids_for(Some(1), None), 1);
        assert!(default_max_pids() >= 1);
    }

    #[test]
    fn instances_near_their_limit_or_holding_a_full_budget_are_recycled() {
        let never =
            || -> Option<(u64, u64)> { panic!("the server is read only for busy instances") };
        // A runtime's usual handful of tasks: reused, without reading the server's count.
        assert_eq!(recycle_reason(3, never), None);
        assert_eq!(recycle_reason(RECYCLE_TASKS_UNDER_PRESSURE, never), None);
        // Half its own limit or more (zombies, leftover children): recycled.
        assert!(recycle_reason(RECYCLE_TASKS, never).is_some());
        assert!(recycle_reason(1021, never).unwrap().contains("1021 tasks"));
        // Between the two: recycled only while the server's budget is 3/4 used.
        let busy = RECYCLE_TASKS_UNDER_PRESSURE + 1;
        assert_eq!(recycle_reason(busy, || Some((1000, 2000))), None);
        assert!(recycle_reason(busy, || Some((1500, 2000))).is_some());
        assert!(recycle_reason(300, || Some((2000, 2000)))
            .unwrap()
            .contains("--max-pids"));
        // No budget (or unreadable): only its own limit counts.
        assert_eq!(recycle_reason(300, || None), None);
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

    #[test]
    fn processes_left_in_a_dead_servers_subtree_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("nimbus");
        let inst = top.join("srv-0/inst");
        fs::create_dir_all(&inst).unwrap();
        let mut orphan = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        fs::write(inst.join("cgroup.procs"), format!("{}\n", orphan.id())).unwrap();
        let mut bystander = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        cleanup_stale(&top);
        let status = orphan.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status}");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "a process outside the subtree is left alone"
        );
        bystander.kill().unwrap();
        bystander.wait().unwrap();
    }
}
