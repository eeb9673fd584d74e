//! Memory accounting: what one instance uses (its cgroup's counters, else its main
//! process's resident set) and what the host has (`/proc/meminfo`, the server's own cgroup
//! limit), for `REPORT` lines, the pool's statistics and its memory budget.

use std::fs;
use std::path::{Path, PathBuf};

/// Reads one instance's memory use. Cheap to clone; stays valid (answering `None`) after
/// the instance is gone.
#[derive(Debug, Clone, Default)]
pub struct MemoryProbe {
    /// The instance's memory cgroup and whether it is v2.
    cgroup: Option<(PathBuf, bool)>,
    /// The instance's main process (fallback without a cgroup, or without `memory.peak`
    /// on a v2 kernel older than 5.19).
    pid: Option<u32>,
    /// A known, constant figure (executors that cannot measure).
    fixed: Option<u64>,
    /// The cgroup's peak-memory file, opened at the first read and re-read in place
    /// (`pread` at offset 0): the REPORT line of every invocation reads it.
    peak_file: std::sync::Arc<std::sync::Mutex<Option<fs::File>>>,
}

impl MemoryProbe {
    /// A probe answering `bytes` for both current and peak use.
    pub fn fixed(bytes: u64) -> Self {
        Self {
            fixed: Some(bytes),
            ..Self::default()
        }
    }

    pub(crate) fn new(cgroup: Option<(PathBuf, bool)>, pid: Option<u32>) -> Self {
        Self {
            cgroup,
            pid,
            fixed: None,
            peak_file: Default::default(),
        }
    }

    /// Where the figures come from: `cgroup`, `process` (the main process's resident set
    /// only: a sandboxed instance's runtime is a child of it and is not counted) or `fixed`.
    pub fn source(&self) -> &'static str {
        if self.fixed.is_some() {
            "fixed"
        } else if self.cgroup.is_some() {
            "cgroup"
        } else {
            "process"
        }
    }

    /// Memory in use now: v2 `memory.current`, v1 `memory.usage_in_bytes` (both count the
    /// page cache the instance caused, as Lambda's figure does), else the main process's
    /// `VmRSS`.
    pub fn current_bytes(&self) -> Option<u64> {
        if let Some(b) = self.fixed {
            return Some(b);
        }
        if let Some((dir, v2)) = &self.cgroup {
            let file = if *v2 {
                "memory.current"
            } else {
                "memory.usage_in_bytes"
            };
            if let Some(b) = read_u64(&dir.join(file)) {
                return Some(b);
            }
        }
        proc_status_kb(self.pid?, "VmRSS:").map(|kb| kb * 1024)
    }

    /// The most memory the instance ever used: v2 `memory.peak`, v1
    /// `memory.max_usage_in_bytes`, else the main process's `VmHWM`.
    pub fn peak_bytes(&self) -> Option<u64> {
        if let Some(b) = self.fixed {
            return Some(b);
        }
        if let Some((dir, v2)) = &self.cgroup {
            let file = if *v2 {
                "memory.peak"
            } else {
                "memory.max_usage_in_bytes"
            };
            if let Some(b) = read_cached(&self.peak_file, &dir.join(file)) {
                return Some(b);
            }
        }
        proc_status_kb(self.pid?, "VmHWM:").map(|kb| kb * 1024)
    }
}

/// A number read from `path` through a file kept open in `cache` (opened at first use).
fn read_cached(cache: &std::sync::Mutex<Option<fs::File>>, path: &Path) -> Option<u64> {
    let mut f = cache.lock().unwrap_or_else(|e| e.into_inner());
    if f.is_none() {
        *f = Some(fs::File::open(path).ok()?);
    }
    read_u64_at(f.as_ref()?)
}

/// The number an open cgroup or proc file holds now: one `pread` from its start.
pub(crate) fn read_u64_at(f: &fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The number the file at `path` holds.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    meminfo_kb(&status, key)
}

/// The value in kB of a `Key:   123 kB` line (`/proc/meminfo`, `/proc/PID/status`).
fn meminfo_kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The host's memory (`/proc/meminfo`), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMemory {
    pub total: u64,
    pub available: u64,
}

impl HostMemory {
    pub fn read() -> Option<Self> {
        Self::parse(&fs::read_to_string("/proc/meminfo").ok()?)
    }

    fn parse(meminfo: &str) -> Option<Self> {
        Some(Self {
            total: meminfo_kb(meminfo, "MemTotal:")? * 1024,
            available: meminfo_kb(meminfo, "MemAvailable:")? * 1024,
        })
    }
}

/// `MemAvailable` of the host in bytes (for the pool's memory-pressure floor).
pub fn host_available_memory() -> Option<u64> {
    HostMemory::read().map(|m| m.available)
}

/// The memory limit of the cgroup this server runs in (v2 `memory.max`, v1
/// `memory.limit_in_bytes`), `None` when unlimited or unknown.
pub fn own_cgroup_limit() -> Option<u64> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    own_cgroup_limit_at(Path::new("/sys/fs/cgroup"), &cgroups)
}

fn own_cgroup_limit_at(base: &Path, proc_self_cgroup: &str) -> Option<u64> {
    // Values this large mean "no limit" (v1 writes 2^63 rounded down to a page).
    const UNLIMITED: u64 = 1 << 60;
    for line in proc_self_cgroup.lines() {
        let mut it = line.splitn(3, ':');
        let (_, controllers, path) = (it.next()?, it.next()?, it.next()?);
        let rel = path.trim_start_matches('/');
        let (dirs, file) = if controllers.is_empty() {
            ([base.join(rel), base.to_path_buf()], "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            // In a cgroup namespace the mount's root is our own cgroup.
            let m = base.join("memory");
            ([m.join(rel), m], "memory.limit_in_bytes")
        } else {
            continue;
        };
        for d in dirs {
            if let Ok(text) = fs::read_to_string(d.join(file)) {
                let text = text.trim();
                if text == "max" {
                    return None;
                }
                return text.parse::<u64>().ok().filter(|&b| b < UNLIMITED);
            }
        }
    }
    None
}

/// The default memory budget for instances: 75% of the host's memory or of this server's
/// cgroup limit, whichever is lower (the rest is left to the server, the page cache and
/// the rest of the host). `None` when the host's memory cannot be read.
pub fn default_instance_budget() -> Option<u64> {
    let total = HostMemory::read()?.total;
    let base = own_cgroup_limit().map_or(total, |l| l.min(total));
    Some(base / 4 * 3)
}

/// The default `MemAvailable` floor: 5% of the host's memory, at most 256 MiB.
pub fn default_memory_floor() -> u64 {
    HostMemory::read().map_or(0, |m| (m.total / 20).min(256 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed() {
        let m = HostMemory::parse("MemTotal:  2048 kB\nMemFree: 10 kB\nMemAvailable:   1024 kB\n")
            .unwrap();
        assert_eq!(m.total, 2048 * 1024);
        assert_eq!(m.available, 1024 * 1024);
        assert!(HostMemory::parse("MemTotal: 1 kB\n").is_none());
    }

    #[test]
    fn own_cgroup_limit_v1_and_v2() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path();
        fs::create_dir_all(b.join("memory/srv")).unwrap();
        fs::write(b.join("memory/srv/memory.limit_in_bytes"), "1073741824\n").unwrap();
        let v1 = "4:memory:/srv\n1:cpu:/\n";
        assert_eq!(own_cgroup_limit_at(b, v1), Some(1 << 30));
        fs::write(
            b.join("memory/srv/memory.limit_in_bytes"),
            "9223372036854771712",
        )
        .unwrap();
        assert_eq!(own_cgroup_limit_at(b, v1), None, "v1 unlimited");
        fs::create_dir_all(b.join("app")).unwrap();
        fs::write(b.join("app/memory.max"), "536870912\n").unwrap();
        assert_eq!(own_cgroup_limit_at(b, "0::/app\n"), Some(512 << 20));
        fs::write(b.join("app/memory.max"), "max\n").unwrap();
        assert_eq!(own_cgroup_limit_at(b, "0::/app\n"), None, "v2 unlimited");
    }

    #[test]
    fn probe_reads_cgroup_then_process() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("memory.usage_in_bytes"), "4096\n").unwrap();
        fs::write(dir.path().join("memory.max_usage_in_bytes"), "8192\n").unwrap();
        let p = MemoryProbe::new(Some((dir.path().to_path_buf(), false)), None);
        assert_eq!(
            (p.current_bytes(), p.peak_bytes()),
            (Some(4096), Some(8192))
        );
        assert_eq!(p.source(), "cgroup");
        // Without a cgroup: this process's resident set.
        let me = MemoryProbe::new(None, Some(std::process::id()));
        assert!(me.current_bytes().unwrap() > 0);
        let current = me.current_bytes().unwrap();
        assert!(
            me.peak_bytes().unwrap() >= current,
            "the peak is at least any earlier use"
        );
        assert_eq!(me.source(), "process");
        let gone = MemoryProbe::new(Some((dir.path().join("gone"), true)), None);
        assert_eq!(gone.current_bytes(), None);
        assert_eq!(MemoryProbe::fixed(7).peak_bytes(), Some(7));
    }
}
