//! Where the CPU goes during a throughput measurement, from `/proc`: the target process,
//! its descendants (Nimbus's function instances), this client, and everything else running
//! on the machine (the benchmark shares its cores with other work).

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, fixed at 100 by the Linux ABI).
pub const USER_HZ: f64 = 100.0;

/// CPU time consumed so far, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    target: u64,
    children: u64,
    client: u64,
    machine_busy: u64,
}

/// CPU time used between two snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub target: Duration,
    pub children: Duration,
    pub client: Duration,
    /// Busy time of every other process on the machine.
    pub other: Duration,
}

impl Snapshot {
    /// Reads the CPU time of `pid`, of its living descendants, of this process and of the
    /// whole machine. Missing `/proc` entries count as zero.
    pub fn take(pid: u32) -> Snapshot {
        let children = descendants(pid).iter().map(|&c| process_ticks(c)).sum();
        Snapshot {
            target: process_ticks(pid),
            children,
            client: process_ticks(std::process::id()),
            machine_busy: machine_busy_ticks(),
        }
    }

    pub fn until(&self, later: &Snapshot) -> Usage {
        let d = |a: u64, b: u64| Duration::from_secs_f64(b.saturating_sub(a) as f64 / USER_HZ);
        let ours = |s: &Snapshot| s.target + s.children + s.client;
        Usage {
            target: d(self.target, later.target),
            children: d(self.children, later.children),
            client: d(self.client, later.client),
            other: d(
                self.machine_busy.saturating_sub(ours(self)),
                later.machine_busy.saturating_sub(ours(later)),
            ),
        }
    }
}

/// utime + stime of `pid` (all its threads).
pub fn process_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// utime + stime, summed, of every living process whose command name (`/proc/PID/comm`) is
/// `comm` (e.g. `postgres`: the postmaster, its background processes and every backend).
pub fn ticks_of_command(comm: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .map(process_ticks)
        .sum()
}

/// Every living descendant of `pid`: sandboxed instances are not its children but its
/// grandchildren and further (bwrap → the sandbox's init → the runtime; slirp4netns).
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = s.rsplit_once(')')?.1.to_string();
            Some((p, rest.split_whitespace().nth(1)?.parse::<u32>().ok()?))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Busy ticks of all CPUs (everything but idle and iowait) from `/proc/stat`.
pub fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest times are inside user).
    v.iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum()
}
