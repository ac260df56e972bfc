//! What the load generator reads from `/proc` (Linux): CPU time of a process (its own, to show
//! a saturated generator, and the broker's), a process's resident set size, and the open-file
//! limit. Plus latency percentiles. Called from the generator's main thread only.

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds used so far by process `pid` ("self" for the generator), all its
/// threads included (exited ones too). `None` when `/proc` is unreadable.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at indices 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// A `kB` line of `/proc/<pid>/status` (e.g. `VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: &str, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Number of threads of process `pid`.
pub fn threads(pid: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix("Threads:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The soft limit on open files of this process (`None`: unlimited or unreadable).
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.get("Max open files".len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU use of a process over an interval, in percent of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    start: Option<f64>,
}

impl CpuMeter {
    pub fn start(pid: &str) -> CpuMeter {
        CpuMeter {
            start: cpu_seconds(pid),
        }
    }

    /// (CPU seconds used since `start`, percent of one core over `wall` seconds).
    pub fn stop(&self, pid: &str, wall: f64) -> Option<(f64, f64)> {
        let used = cpu_seconds(pid)? - self.start?;
        let pct = if wall > 0.0 { used / wall * 100.0 } else { 0.0 };
        Some((used, pct))
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
}

/// Percentiles (nearest rank) of `samples`, which this sorts.
pub fn percentiles(samples: &mut [u32]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let n = samples.len();
    let at = |q: f64| -> u32 {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        samples.get(rank - 1).copied().unwrap_or(0)
    };
    Some(Percentiles {
        count: n,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: samples.last().copied().unwrap_or(0),
    })
}
