//! What the numbers were measured on, and the process counters they are
//! made of: CPU time from `/proc/<pid>/stat` or `getrusage`, resident memory
//! from `/proc/<pid>/status`.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory: String,
    pub os: String,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(
                || "unknown".into(),
                |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0),
            );
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let os = os_release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or_else(|| "unknown".into(), |v| v.trim_matches('"').to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |k| k.trim().to_string());
        Machine {
            nproc,
            cpu_model,
            memory,
            os,
            kernel,
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{} cores (nproc), {}, {} RAM, {} (Linux {})",
            self.nproc, self.cpu_model, self.memory, self.os, self.kernel
        )
    }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime of a process (all its threads), from `/proc/<pid>/stat`.
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields start after its ')'.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks();
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// Resident set size of a process, bytes (`VmRSS`).
pub fn proc_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Run-queue wait of each live thread of a process, ns by thread id
/// (`/proc/<pid>/task/<tid>/schedstat`, second field).
fn thread_waits(pid: u32) -> std::collections::HashMap<u64, u64> {
    let mut waits = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return waits;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
        if let Some(ns) = text
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
        {
            waits.insert(tid, ns);
        }
    }
    waits
}

/// Time the process's threads spent runnable but waiting for a CPU, summed
/// over its live threads. On a shared machine this shows how much the
/// server was held back by others. Threads that exit take their share with
/// them: for work that starts and ends threads, use [`WaitSampler`].
pub fn proc_runqueue_wait(pid: u32) -> Duration {
    Duration::from_nanos(thread_waits(pid).values().sum())
}

/// Run-queue wait of a process over a stretch of time, including threads
/// that start and exit within it (the in-process load generators make and
/// drop their runtimes): a thread reads every thread's counter every
/// 100 ms and keeps the last value seen per thread, so a thread's last
/// 100 ms before it exits may be missed.
pub struct WaitSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl WaitSampler {
    pub fn start(pid: u32) -> WaitSampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = thread_waits(pid);
            let mut last = start.clone();
            loop {
                let done = flag.load(std::sync::atomic::Ordering::Relaxed);
                last.extend(thread_waits(pid));
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last.iter()
                .map(|(tid, ns)| ns.saturating_sub(start.get(tid).copied().unwrap_or(0)))
                .sum()
        });
        WaitSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// The wait accumulated since `start`.
    pub fn finish(mut self) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let ns = self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0);
        Duration::from_nanos(ns)
    }
}

impl Drop for WaitSampler {
    // A run that fails drops the sampler unfinished; its thread must still end.
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU time of all waited-for children of this process.
pub fn children_cpu() -> Duration {
    rusage(libc::RUSAGE_CHILDREN)
}

/// CPU time of this whole process.
pub fn self_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_counters_are_readable() {
        let pid = std::process::id();
        assert!(proc_rss(pid).unwrap() > 0);
        assert!(proc_cpu(pid).is_some());
        assert!(!Machine::probe().one_line().is_empty());
    }

    #[test]
    fn wait_sampler_keeps_threads_that_exited() {
        let sampler = WaitSampler::start(std::process::id());
        // Four busy threads per core for 400 ms: together they are runnable
        // for 1.6 s per core but can run for 0.4 s, so about 1.2 s per core
        // is waiting, all of it in threads that exit before `finish`, which
        // a plain before/after read would miss.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let busy: Vec<_> = (0..4 * cores)
            .map(|_| {
                std::thread::spawn(|| {
                    let t0 = std::time::Instant::now();
                    let mut x = 0u64;
                    while t0.elapsed() < Duration::from_millis(400) {
                        x = x.wrapping_mul(31).wrapping_add(1);
                    }
                    std::hint::black_box(x)
                })
            })
            .collect();
        for b in busy {
            let _ = b.join();
        }
        let waited = sampler.finish();
        assert!(
            waited > Duration::from_millis(500) * cores as u32,
            "waited {waited:?}"
        );
    }
}
