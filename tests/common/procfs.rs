//! The broker process's figures from `/proc` (Linux): resident memory, CPU time, threads,
//! descriptors.
//!
//! Every reader panics when the process is gone (no `/proc/PID`, or a zombie that exited but
//! was not reaped yet): a bound checked against a process that no longer runs must fail, not
//! read 0 and pass.

use std::fs;

/// `/proc/PID/status`, or a panic naming why the process cannot be measured.
fn status(pid: u32) -> String {
    let st = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("broker process {pid} is gone (/proc/{pid}/status: {e})"));
    let state = field_text(&st, "State:").unwrap_or("?");
    assert!(
        !state.starts_with('Z') && !state.starts_with('X'),
        "broker process {pid} has exited (state {state})"
    );
    st
}

fn field_text<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(str::trim)
}

fn field(pid: u32, name: &str) -> u64 {
    let st = status(pid);
    field_text(&st, name)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("broker process {pid}: no {name} in /proc/{pid}/status"))
}

/// Resident memory (VmRSS) in kB.
pub fn rss_kb(pid: u32) -> u64 {
    field(pid, "VmRSS:")
}

/// CPU time the process has used (user + system, all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    status(pid);
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("broker process {pid} is gone (/proc/{pid}/stat: {e})"));
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 14th and 15th fields of the line, the 12th and 13th after the name.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("broker process {pid}: unreadable /proc/{pid}/stat"));
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| {
            v.parse::<u64>()
                .unwrap_or_else(|_| panic!("/proc/{pid}/stat: {v}"))
        })
        .sum();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(hz > 0, "sysconf(_SC_CLK_TCK) failed");
    ticks as f64 / hz as f64
}

/// Number of threads.
pub fn threads(pid: u32) -> u64 {
    field(pid, "Threads:")
}

/// Number of open descriptors.
pub fn fds(pid: u32) -> u64 {
    status(pid);
    let n = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("broker process {pid}: /proc/{pid}/fd: {e}"))
        .count() as u64;
    // A process that exited between the two reads would show no descriptors.
    status(pid);
    n
}

/// The thread names (`/proc/PID/task/*/comm`), sorted, for failure messages.
pub fn thread_names(pid: u32) -> String {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.join(" ")
}

/// Voluntary context switches (times it went to sleep, so was woken) of the broker's thread
/// named `name`.
pub fn thread_wakeups(pid: u32, name: &str) -> u64 {
    let tid: u32 = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("broker process {pid} is gone (/proc/{pid}/task: {e})"))
        .filter_map(|e| e.ok())
        .find(|e| fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no thread named {name}: {}", thread_names(pid)));
    // /proc/<tid> is the thread's own view of the process files.
    field(tid, "voluntary_ctxt_switches:")
}

/// The soft RLIMIT_NOFILE of this process, raised to at least `want` (up to the hard limit) via
/// `prlimit --pid <own pid>`. Returns the soft limit in force.
pub fn ensure_nofile(want: u64) -> u64 {
    let read = || -> (u64, u64) {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or("");
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (
            nums.first().copied().unwrap_or(0),
            nums.get(1).copied().unwrap_or(u64::MAX),
        )
    };
    let (soft, hard) = read();
    if soft >= want {
        return soft;
    }
    let _ = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard}:{hard}"))
        .status();
    read().0
}

/// Number of threads whose name (`/proc/PID/task/TID/comm`) starts with `prefix`, such as the
/// reader threads `client-<id>`; threads that end while they are listed are not counted.
pub fn threads_named(pid: u32, prefix: &str) -> u64 {
    status(pid);
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("broker process {pid}: /proc/{pid}/task: {e}"));
    let n = tasks
        .filter_map(Result::ok)
        .filter_map(|t| fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count() as u64;
    status(pid);
    n
}

/// The ids (TIDs) of the threads whose name starts with `prefix`, sorted.
pub fn thread_ids_named(pid: u32, prefix: &str) -> Vec<u32> {
    status(pid);
    let mut ids: Vec<u32> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("broker process {pid}: /proc/{pid}/task: {e}"))
        .filter_map(Result::ok)
        .filter(|t| fs::read_to_string(t.path().join("comm")).is_ok_and(|n| n.starts_with(prefix)))
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Reader threads parked for the next socket (`reader-idle`): the broker keeps at most this
/// many once their clients are gone.
pub const MAX_PARKED_READERS: u64 = 32;

/// Threads less those parked for the next socket (`reader-idle`, at most
/// [`MAX_PARKED_READERS`]): what must fall back to its count before clients came once they are
/// gone. Panics when more than that many are parked: the cache is bounded.
pub fn threads_not_parked(pid: u32) -> u64 {
    let parked = threads_named(pid, "reader-idle");
    assert!(
        parked <= MAX_PARKED_READERS,
        "{parked} reader threads parked, bound {MAX_PARKED_READERS}"
    );
    threads(pid).saturating_sub(parked)
}
