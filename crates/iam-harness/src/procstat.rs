//! What the machine did during a scenario, from `/proc`: resident memory of the server, CPU
//! time of the server, of PostgreSQL and of the whole machine.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::process::run_quiet;

/// A `kB` field (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// How many files (sockets included) process `pid` has open: the entries of
/// `/proc/<pid>/fd`.
pub fn open_files(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Where the CPU time went during a scenario, in percent.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// The server process, of one CPU.
    pub server: Option<f64>,
    /// Every `postgres` process on the machine, of one CPU.
    pub postgres: Option<f64>,
    /// Everything on the machine, of all CPUs.
    pub machine: Option<f64>,
}

/// CPU time counters at one moment (Linux `/proc`), in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    /// All CPUs: (busy, total).
    pub machine: Option<(u64, u64)>,
    /// The server process.
    pub server: Option<u64>,
    /// All `postgres` processes, including the exited backends their postmaster reaped.
    pub postgres: Option<u64>,
}

impl CpuSnapshot {
    /// The counters now, with the server's if `server` names its process.
    pub fn take(server: Option<u32>) -> Self {
        Self {
            machine: machine_ticks(),
            server: server.and_then(|pid| process_ticks(pid).map(|ticks| ticks.own)),
            postgres: postgres_ticks(),
        }
    }

    /// The CPU use between `before` and this snapshot, `elapsed` apart.
    pub fn use_since(self, before: Self, elapsed: Duration, clk_tck: f64) -> CpuUse {
        let of_one_cpu = |now: Option<u64>, then: Option<u64>| {
            let ticks = now?.checked_sub(then?)?;
            Some(ticks_f64(ticks) / clk_tck / elapsed.as_secs_f64() * 100.0)
        };
        let machine = self.machine.zip(before.machine).and_then(
            |((busy, total), (busy_before, total_before))| {
                let total = total.checked_sub(total_before).filter(|&ticks| ticks > 0)?;
                let busy = busy.checked_sub(busy_before)?;
                Some(ticks_f64(busy) / ticks_f64(total) * 100.0)
            },
        );
        CpuUse {
            server: of_one_cpu(self.server, before.server),
            postgres: of_one_cpu(self.postgres, before.postgres),
            machine,
        }
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "tick counts stay far below 2^53"
)]
/// Clock ticks as a float (exact below 2^53).
pub fn ticks_f64(ticks: u64) -> f64 {
    ticks as f64
}

/// Busy and total ticks of all CPUs from the first line of `/proc/stat`.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((total.checked_sub(idle)?, total))
}

/// One process's CPU time from `/proc/<pid>/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessTicks {
    /// utime + stime.
    pub own: u64,
    /// cutime + cstime: the children it has waited for.
    pub children: u64,
}

/// The CPU time of process `pid` (`/proc/<pid>/stat`).
pub fn process_ticks(pid: u32) -> Option<ProcessTicks> {
    parse_process_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|(_, t)| t)
}

/// The command name and CPU times of a `/proc/<pid>/stat` line.
pub fn parse_process_stat(stat: &str) -> Option<(&str, ProcessTicks)> {
    // The command name (field 2) is in parentheses and may contain spaces or parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let fields: Vec<u64> = stat
        .get(close + 1..)?
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // Counting from field 3 (state): utime, stime, cutime, cstime are fields 14 to 17.
    match fields[..] {
        [user, system, children_user, children_system] => Some((
            name,
            ProcessTicks {
                own: user + system,
                children: children_user + children_system,
            },
        )),
        _ => None,
    }
}

/// The CPU time of every `postgres` process on the machine, with the children each has
/// reaped: a postmaster's reaped children are the backends of closed connections, so the
/// sum keeps counting them after they exit.
pub fn postgres_ticks() -> Option<u64> {
    let mut total = 0;
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(("postgres", ticks)) = parse_process_stat(&stat) {
            total += ticks.own + ticks.children;
        }
    }
    Some(total)
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on practically every Linux).
pub fn clock_ticks_per_second() -> f64 {
    run_quiet(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|output| output.trim().parse::<u32>().ok())
        .filter(|&ticks| ticks > 0)
        .map_or(100.0, f64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_proc_files() {
        let pid = std::process::id();
        assert!(status_kib(pid, "VmRSS:").is_some_and(|kib| kib > 0));
        assert!(process_ticks(pid).is_some());
        assert!(postgres_ticks().is_some());
        let stat = "42 (post gres) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18";
        let (name, ticks) = parse_process_stat(stat).unwrap();
        assert_eq!(name, "post gres");
        assert_eq!(
            ticks,
            ProcessTicks {
                own: 11 + 12,
                children: 13 + 14
            }
        );
        let (busy, total) = machine_ticks().unwrap();
        assert!(busy <= total);
    }
}
