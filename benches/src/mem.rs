//! Memory of processes from `/proc`: resident (RSS) and proportional (PSS: shared pages
//! divided among the processes sharing them) set sizes, for the density scenario.

/// Memory of one process or a sum of processes, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mem {
    pub rss_kb: u64,
    pub pss_kb: u64,
    /// Processes counted.
    pub procs: u64,
}

impl std::ops::Add for Mem {
    type Output = Mem;
    fn add(self, o: Mem) -> Mem {
        Mem {
            rss_kb: self.rss_kb + o.rss_kb,
            pss_kb: self.pss_kb + o.pss_kb,
            procs: self.procs + o.procs,
        }
    }
}

/// RSS and PSS of `pid` from `/proc/PID/smaps_rollup` (PSS = RSS when that file is
/// missing); zero when the process is gone.
pub fn of_pid(pid: u32) -> Mem {
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let (Some(rss), Some(pss)) = (field(&s, "Rss:"), field(&s, "Pss:")) {
            return Mem {
                rss_kb: rss,
                pss_kb: pss,
                procs: 1,
            };
        }
    }
    match std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| field(&s, "VmRSS:"))
    {
        Some(rss) => Mem {
            rss_kb: rss,
            pss_kb: rss,
            procs: 1,
        },
        None => Mem::default(),
    }
}

/// The sum over every living descendant of `pid` (function instances with their sandbox
/// helpers, and stem cells if the server keeps any).
pub fn of_descendants(pid: u32) -> Mem {
    crate::cpu::descendants(pid)
        .into_iter()
        .map(of_pid)
        .fold(Mem::default(), |a, b| a + b)
}
