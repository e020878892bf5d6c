//! What every program measures and how it prints it: summaries of repeated samples, CPU time
//! and resident memory of a process from `/proc`, and the common output lines.

use std::time::Duration;

use anyhow::Context as _;

/// min / median / p99 (nearest rank) of a set of samples, in the samples' unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| s.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let index = (q * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Some(Self {
            count: sorted.len(),
            min: sorted[0],
            median: rank(0.5),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        })
    }

    /// Milliseconds of a set of durations.
    pub fn of_durations(samples: &[Duration]) -> Option<Self> {
        let ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Self::of(&ms)
    }
}

/// One line: `label  min … median … p99 … (n runs) unit`.
pub fn line(label: &str, summary: &Summary, unit: &str) -> String {
    format!(
        "  {label:<42} min {:>9.2}  median {:>9.2}  p99 {:>9.2} {unit}  (n={})",
        summary.min, summary.median, summary.p99, summary.count
    )
}

/// `measured / reference`, printed with the target it is judged against.
pub fn ratio_line(label: &str, measured: f64, reference: f64, target: Option<f64>) -> String {
    let ratio = if reference > 0.0 {
        measured / reference
    } else {
        f64::NAN
    };
    match target {
        Some(target) => format!(
            "  {label:<42} ratio {ratio:>7.2}   target <= {target:.2}   {}",
            if ratio <= target { "met" } else { "MISSED" }
        ),
        None => format!("  {label:<42} ratio {ratio:>7.2}"),
    }
}

/// A value against a target it must stay at or below.
pub fn target_line(label: &str, measured: f64, unit: &str, target: f64) -> String {
    format!(
        "  {label:<42} {measured:>10.3} {unit}   target <= {target} {unit}   ratio {:.2}   {}",
        measured / target,
        if measured <= target { "met" } else { "MISSED" }
    )
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds a process used so far (all its threads).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after_name = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .context("/proc stat without a command name")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name.
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .context("short /proc stat")?
            .parse::<u64>()
            .context("/proc stat field is not a number")
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND)
}

/// Resident set size in kB from `/proc/<pid>/status`.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS line")
}

/// CPU seconds of a process between two instants, as a share of one core.
pub struct CpuMeter {
    pid: u32,
    cpu_start: f64,
    wall_start: std::time::Instant,
}

impl CpuMeter {
    pub fn start(pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            pid,
            cpu_start: cpu_seconds(pid)?,
            wall_start: std::time::Instant::now(),
        })
    }

    /// (CPU seconds used, wall seconds elapsed) since the start.
    pub fn read(&self) -> anyhow::Result<(f64, f64)> {
        Ok((
            cpu_seconds(self.pid)? - self.cpu_start,
            self.wall_start.elapsed().as_secs_f64(),
        ))
    }

    /// Percent of one core since the start.
    pub fn percent(&self) -> anyhow::Result<f64> {
        let (cpu, wall) = self.read()?;
        Ok(if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 })
    }
}

/// Least-squares line `y = intercept + slope · x`.
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    Some((mean_y - slope * mean_x, slope))
}

/// Prints the heading every program starts with: what runs, on which machine, the settings.
pub fn heading(name: &str, what: &str) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("== bench {name}: {what}");
    println!(
        "   machine: {cores} cores, {memory_gib:.1} GiB; load average at start {}",
        load.join(" ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let summary = Summary::of(&samples).unwrap();
        assert_eq!(summary.min, 1.0);
        assert_eq!(summary.median, 50.0);
        assert_eq!(summary.p99, 99.0);
        assert_eq!(Summary::of(&[3.0]).unwrap().p99, 3.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn a_line_through_two_points() {
        let (intercept, slope) = fit_line(&[(10.0, 12.0), (1000.0, 1002.0)]).unwrap();
        assert!((slope - 1.0).abs() < 1e-9);
        assert!((intercept - 2.0).abs() < 1e-9);
    }

    #[test]
    fn own_cpu_and_memory_are_readable() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(rss_kb(pid).unwrap() > 0);
    }
}
