//! What loadgen measures besides its own clients: a process's memory and CPU time from `/proc`,
//! latency percentiles from an HDR histogram, and the report that puts them side by side.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

/// Memory and CPU time of one process at one moment, read from `/proc/<pid>/`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    /// Resident set size: the memory the process really occupies, in KiB.
    pub(crate) rss_kib: u64,
    /// User plus system CPU time since the process started.
    pub(crate) cpu: Duration,
    /// The same time split into user space and the kernel, in clock ticks (10 ms): for windows
    /// of a few seconds, such as `--perf-control`'s.
    pub(crate) user: Duration,
    pub(crate) system: Duration,
}

impl Usage {
    /// Reads `pid`'s usage, or this process's with `None`.
    pub(crate) fn of(pid: Option<u32>) -> std::io::Result<Self> {
        let dir = pid.map_or_else(|| "/proc/self".to_owned(), |pid| format!("/proc/{pid}"));
        let status = std::fs::read_to_string(format!("{dir}/status"))?;
        let rss_kib = kib_field(&status, "VmRSS:").unwrap_or(0);
        // Fields 14 and 15 (utime, stime) in clock ticks; count from after the command name,
        // which is in parentheses and may contain spaces.
        let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
        let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
        let [user, system] = [11, 12].map(|i| {
            let ticks = fields.get(i).and_then(|field| field.parse::<u64>().ok());
            Duration::from_secs_f64(ticks.unwrap_or(0) as f64 / per_second)
        });
        let cpu = match pid {
            Some(_) => user + system,
            // Our own CPU time to the nanosecond: /proc counts in clock ticks (10 ms), too coarse
            // for a few thousand events at a few microseconds each.
            None => {
                let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
                Duration::new(
                    u64::try_from(now.tv_sec).unwrap_or_default(),
                    u32::try_from(now.tv_nsec).unwrap_or_default(),
                )
            }
        };
        Ok(Self {
            rss_kib,
            cpu,
            user,
            system,
        })
    }
}

/// Latencies in microseconds, from 1 µs to 10 minutes with three significant digits.
pub(crate) struct Latencies(Histogram<u64>);

impl Latencies {
    pub(crate) fn new() -> Self {
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    fn millis(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn summary(&self) -> (String, Value) {
        if self.0.is_empty() {
            return ("none recorded".to_owned(), Value::Null);
        }
        let (p50, p90, p99, max) = (
            self.millis(0.5),
            self.millis(0.9),
            self.millis(0.99),
            self.0.max() as f64 / 1000.0,
        );
        (
            format!(
                "p50 {p50:.2} ms, p90 {p90:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({} samples)",
                self.0.len()
            ),
            json!({ "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max, "samples": self.0.len() }),
        )
    }
}

/// `cpu` spread over `count` things, in microseconds each; zero things count as one.
pub(crate) fn micros_per(cpu: Duration, count: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / count.max(1) as f64
}

/// The result of one run: rows for people, the same facts as one JSON object for scripts.
pub(crate) struct Report {
    rows: Vec<(String, String)>,
    fields: Map<String, Value>,
}

impl Report {
    pub(crate) fn new(scenario: &str) -> Self {
        let mut report = Self {
            rows: Vec::new(),
            fields: Map::new(),
        };
        report.add("scenario", "scenario", json!(scenario), scenario.to_owned());
        report
    }

    /// Adds one fact: its JSON key and value, and its row in the table.
    pub(crate) fn add(&mut self, key: &str, label: &str, value: Value, text: String) {
        self.fields.insert(key.to_owned(), value);
        self.rows.push((label.to_owned(), text));
    }

    pub(crate) fn latencies(&mut self, key: &str, label: &str, latencies: &Latencies) {
        let (text, value) = latencies.summary();
        self.add(key, label, value, text);
    }

    /// The server's memory per connection and CPU time, and loadgen's CPU time, over a window.
    pub(crate) fn usage(
        &mut self,
        connections: usize,
        server: Option<(Usage, Usage)>,
        loadgen: (Usage, Usage),
    ) {
        if let Some((before, after)) = server {
            let grown = after.rss_kib.saturating_sub(before.rss_kib);
            let per_connection = grown as f64 / connections.max(1) as f64;
            self.add(
                "server_rss_kib",
                "server memory",
                json!({ "before": before.rss_kib, "after": after.rss_kib, "per_connection": per_connection }),
                format!(
                    "{:.1} MiB before, {:.1} MiB after: {per_connection:.2} KiB per connection",
                    before.rss_kib as f64 / 1024.0,
                    after.rss_kib as f64 / 1024.0
                ),
            );
            let cpu = after.cpu.saturating_sub(before.cpu);
            self.add(
                "server_cpu_s",
                "server CPU",
                json!(cpu.as_secs_f64()),
                format!("{:.3} s", cpu.as_secs_f64()),
            );
        }
        let cpu = loadgen.1.cpu.saturating_sub(loadgen.0.cpu);
        self.add(
            "loadgen_cpu_s",
            "loadgen CPU",
            json!(cpu.as_secs_f64()),
            format!("{:.3} s", cpu.as_secs_f64()),
        );
    }

    /// The server's CPU time per delivery (one message reaching one client) over a measured
    /// window: the figure that does not depend on how fast loadgen reads. `server` is the
    /// server's usage right before the window and right after it; without `--server-pid` there
    /// is none and no row. The kernel counts CPU time in clock ticks (10 ms), so the window
    /// should hold at least a few hundred milliseconds of the server's work.
    pub(crate) fn server_cpu_per_delivery(
        &mut self,
        server: Option<(Usage, Usage)>,
        deliveries: u64,
    ) {
        let Some((before, after)) = server else {
            return;
        };
        let cpu = after.cpu.saturating_sub(before.cpu);
        let micros = micros_per(cpu, deliveries);
        self.add(
            "server_cpu_us_per_delivery",
            "server CPU / delivery",
            json!(micros),
            format!(
                "{micros:.3} µs ({:.2} s for {deliveries} deliveries while measuring)",
                cpu.as_secs_f64()
            ),
        );
    }

    /// The kernel's slab growth while `connections` were opened and held. Both ends of each
    /// connection are sockets on this machine, so the growth is divided by twice the count. It
    /// is machine-wide: anything else running meanwhile blurs it.
    pub(crate) fn kernel_slab(&mut self, connections: usize, before_kib: u64, after_kib: u64) {
        let grown = after_kib.saturating_sub(before_kib);
        let per_socket = grown as f64 / (2 * connections.max(1)) as f64;
        self.add(
            "kernel_slab_kib",
            "kernel slab",
            json!({ "before": before_kib, "after": after_kib, "per_socket": per_socket }),
            format!(
                "+{:.1} MiB for {} sockets (both ends): {per_socket:.2} KiB per socket",
                grown as f64 / 1024.0,
                2 * connections
            ),
        );
    }

    /// The measured window's CPU time, user space and kernel apart, for each process that took
    /// part (`server`, `loadgen`; the floor's `writer` and `reader`), with the deliveries it
    /// holds: what `profile.sh` divides perf's counts of the same window by.
    pub(crate) fn window(&mut self, deliveries: u64, processes: &[(&str, Option<(Usage, Usage)>)]) {
        let mut cpu = Map::new();
        let mut text = format!("{deliveries} deliveries");
        for (name, usage) in processes {
            let Some((from, to)) = usage else { continue };
            let user = to.user.saturating_sub(from.user).as_secs_f64();
            let system = to.system.saturating_sub(from.system).as_secs_f64();
            cpu.insert(
                (*name).to_owned(),
                json!({ "user_s": user, "system_s": system }),
            );
            text.push_str(&format!("; {name} {user:.2} s user, {system:.2} s system"));
        }
        self.add(
            "window",
            "measured window",
            json!({ "deliveries": deliveries, "cpu": cpu }),
            text,
        );
    }

    pub(crate) fn to_json(&self) -> String {
        Value::Object(self.fields.clone()).to_string()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|(label, _)| label.len())
            .max()
            .unwrap_or(0);
        for (label, text) in &self.rows {
            writeln!(f, "{label:<width$}  {text}")?;
        }
        Ok(())
    }
}

/// The kernel's slab memory (`Slab:` in /proc/meminfo), in KiB: where it keeps sockets, among
/// much else. `None` where /proc/meminfo cannot be read.
pub(crate) fn kernel_slab_kib() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "Slab:")
}

/// The value of a `Name:   1234 kB` line, as /proc's status and meminfo files write them.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu_ms: u64) -> Usage {
        Usage {
            rss_kib: 0,
            cpu: Duration::from_millis(cpu_ms),
            user: Duration::from_millis(cpu_ms / 4),
            system: Duration::from_millis(cpu_ms - cpu_ms / 4),
        }
    }

    /// Server CPU per delivery is the CPU used between the two readings over the deliveries,
    /// in microseconds, and there is no row without a server to read.
    #[test]
    fn server_cpu_per_delivery_divides_the_window() {
        let mut report = Report::new("test");
        report.server_cpu_per_delivery(None, 10);
        assert!(!report.to_json().contains("server_cpu_us_per_delivery"));
        report.server_cpu_per_delivery(Some((usage(1_000), usage(1_030))), 20_000);
        let json: Value = serde_json::from_str(&report.to_json()).expect("JSON");
        let micros = json["server_cpu_us_per_delivery"]
            .as_f64()
            .expect("a number");
        assert!((micros - 1.5).abs() < 1e-9, "{micros}");
        assert!(
            report
                .to_string()
                .contains("server CPU / delivery  1.500 µs")
        );
    }

    /// The window's CPU is each process's user and system time between its two readings; a
    /// process without readings (no `--server-pid`) has no entry.
    #[test]
    fn window_splits_user_from_system() {
        let mut report = Report::new("test");
        report.window(
            500,
            &[
                ("server", Some((usage(1_000), usage(1_400)))),
                ("loadgen", None),
            ],
        );
        let json: Value = serde_json::from_str(&report.to_json()).expect("JSON");
        let window = &json["window"];
        assert_eq!(window["deliveries"], 500);
        assert!((window["cpu"]["server"]["user_s"].as_f64().unwrap() - 0.1).abs() < 1e-9);
        assert!((window["cpu"]["server"]["system_s"].as_f64().unwrap() - 0.3).abs() < 1e-9);
        assert!(window["cpu"].get("loadgen").is_none());
    }

    /// Read from /proc, this process's user and system time add up to its total within the
    /// 10 ms clock ticks each of the two is counted in.
    #[test]
    fn usage_reads_user_and_system_apart() {
        // Spin for 300 ms of this thread's own CPU, however busy the machine is, reading the
        // clock (a system call for CPU clocks) only every million additions.
        let thread_cpu = || {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
            Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
        };
        let until = thread_cpu() + Duration::from_millis(300);
        let mut spin = 0u64;
        while thread_cpu() < until {
            for _ in 0..1_000_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
        }
        let pid = std::process::id();
        let usage = Usage::of(Some(pid)).expect("our own /proc entry");
        assert!(usage.user >= Duration::from_millis(200), "{usage:?}");
        assert_eq!(usage.cpu, usage.user + usage.system);
    }

    /// No deliveries is no division by zero, and a clock that went back is no negative CPU.
    #[test]
    fn micros_per_handles_the_edges() {
        assert_eq!(micros_per(Duration::from_millis(2), 0), 2000.0);
        assert_eq!(micros_per(Duration::ZERO, 5), 0.0);
        let mut report = Report::new("test");
        report.server_cpu_per_delivery(Some((usage(50), usage(40))), 10);
        assert!(
            report
                .to_json()
                .contains("\"server_cpu_us_per_delivery\":0.0")
        );
    }
}
