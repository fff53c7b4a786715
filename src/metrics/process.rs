//! The standard `process_*` metrics (the names client_golang and most exporters use), read
//! from Linux's /proc at scrape time. Elsewhere, or where /proc cannot be read, they are left
//! out rather than reported as zero.

use std::path::Path;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of the times in /proc/<pid>/stat: `USER_HZ`, which Linux fixes at 100
/// for user space on every architecture it exports /proc for.
const USER_HZ: f64 = 100.0;

/// What one scrape read about this process.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

impl Sample {
    /// Reads `/proc/self` (and `/proc/stat` for the boot time).
    fn read(proc: &Path) -> Self {
        let read = |file: &str| std::fs::read_to_string(proc.join(file)).ok();
        let stat = read("self/stat").and_then(|s| parse_stat(&s));
        let status = read("self/status");
        let boot = read("stat").and_then(|s| field_after(&s, "btime").and_then(|v| v.parse::<f64>().ok()));
        let kib = |key: &str| status.as_deref().and_then(|s| kib_field(s, key));
        Self {
            cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / USER_HZ),
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            open_fds: std::fs::read_dir(proc.join("self/fd"))
                .ok()
                .map(|d| i64::try_from(d.count()).unwrap_or(i64::MAX)),
            max_fds: read("self/limits").and_then(|s| max_open_files(&s)),
            start_time_seconds: boot
                .zip(stat)
                .map(|(boot, s)| boot + s.start_ticks as f64 / USER_HZ),
        }
    }
}

/// The fields of /proc/<pid>/stat used here.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stat {
    /// utime + stime.
    cpu_ticks: u64,
    /// Start time after boot.
    start_ticks: u64,
}

/// Parses /proc/<pid>/stat. The command name (field 2) is in parentheses and may hold spaces
/// or parentheses itself, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
}

/// The first word after `key` on the line that starts with it.
fn field_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
}

/// A `kB` value of /proc/<pid>/status, in bytes.
fn kib_field(status: &str, key: &str) -> Option<i64> {
    field_after(status, key)?
        .parse::<i64>()
        .ok()
        .map(|k| k.saturating_mul(1024))
}

/// The soft limit of open files from /proc/<pid>/limits (`unlimited` is left out).
fn max_open_files(limits: &str) -> Option<i64> {
    field_after(limits, "Max open files")?.parse().ok()
}

/// Encodes the process metrics on every scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    proc: std::path::PathBuf,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self { proc: "/proc".into() }
    }
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: Option<f64>) -> std::fmt::Result {
    let Some(value) = value else { return Ok(()) };
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: Option<N>) -> std::fmt::Result
where
    N: prometheus_client::encoding::EncodeGaugeValue,
{
    let Some(value) = value else { return Ok(()) };
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    // hack/tools/promql-check reads the names from the `counter(`/`gauge(` calls: keep that shape.
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = Sample::read(&self.proc);
        let e = &mut encoder;
        counter(
            e,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            s.cpu_seconds,
        )?;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            s.resident_bytes,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            s.virtual_bytes,
        )?;
        gauge(
            e,
            "process_open_fds",
            "Number of open file descriptors",
            s.open_fds,
        )?;
        gauge(
            e,
            "process_max_fds",
            "Maximum number of open file descriptors",
            s.max_fds,
        )?;
        gauge(
            e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            s.start_time_seconds,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis of its own.
        let stat =
            "4242 (vpn (op) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 1234 123456 789";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 1234
            })
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
    }

    #[test]
    fn a_fake_proc_is_read_into_seconds_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("self/fd")).unwrap();
        for fd in ["0", "1", "2"] {
            std::fs::write(p.join("self/fd").join(fd), "").unwrap();
        }
        let stat = "7 (vpn-operator) S 1 7 7 0 -1 0 0 0 0 0 150 50 0 0 20 0 4 0 4200 0 0";
        std::fs::write(p.join("self/stat"), stat).unwrap();
        std::fs::write(
            p.join("self/status"),
            "Name:\tvpn-operator\nVmSize:\t  2048 kB\nVmRSS:\t  1024 kB\n",
        )
        .unwrap();
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 4096                 files\n";
        std::fs::write(p.join("self/limits"), limits).unwrap();
        std::fs::write(p.join("stat"), "cpu  1 2 3\nbtime 1700000000\n").unwrap();
        let sample = Sample::read(p);
        assert_eq!(
            sample,
            Sample {
                cpu_seconds: Some(2.0),
                resident_bytes: Some(1024 * 1024),
                virtual_bytes: Some(2048 * 1024),
                open_fds: Some(3),
                max_fds: Some(1024),
                start_time_seconds: Some(1_700_000_042.0),
            }
        );
    }

    #[test]
    fn without_proc_nothing_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Sample::read(dir.path()), Sample::default());
    }
}
