//! The load: wrk in the client namespace, pinned to the load CPU, with a
//! Lua script that picks a random Host among the benchmark's Ingresses for
//! each request (the same script for 1 and for 10,000, so the rows differ
//! only in the proxy's configuration), and the parsing of its report.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use xdp_ingress_lab::Netns;

/// wrk's script: `wrk ... -s hosts.lua URL -- COUNT` sends each request to
/// `h<random 0..COUNT>.bench.example`. Lua's generator is not seeded, so
/// every run sends the same sequence of hosts.
pub const HOSTS_SCRIPT: &str = r#"-- A random Host among h0..h<COUNT-1>.bench.example per request.
local count = 1
function init(args)
  count = tonumber(args[1]) or 1
end
function request()
  return wrk.format(nil, nil, { Host = "h" .. math.random(0, count - 1) .. ".bench.example" })
end
"#;

/// One wrk run.
#[derive(Debug, Clone)]
pub struct WrkLoad<'a> {
    /// The client namespace.
    pub client: &'a Netns,
    /// `taskset -c` CPU list for wrk.
    pub cpus: &'a str,
    /// `http://ADDR/`.
    pub url: String,
    /// The [`HOSTS_SCRIPT`] file.
    pub script: &'a Path,
    /// How many hosts the script picks from.
    pub hosts: usize,
    /// Open connections (`-c`), all on one thread.
    pub connections: u32,
    /// How long (`-d`).
    pub duration: Duration,
}

impl WrkLoad<'_> {
    /// Runs wrk (bounded: its duration plus a margin) and parses its report.
    pub fn run(&self) -> Result<WrkReport> {
        self.run_wrapped(&[])
    }

    /// Like [`WrkLoad::run`], with `wrapper` (a command that executes its
    /// arguments) in front of `taskset ... wrk ...` in the client namespace.
    pub fn run_wrapped(&self, wrapper: &[&str]) -> Result<WrkReport> {
        let duration = format!("{}s", self.duration.as_secs().max(1));
        let connections = self.connections.to_string();
        let hosts = self.hosts.to_string();
        let script = self.script.display().to_string();
        let mut args = wrapper.to_vec();
        args.extend([
            "taskset",
            "-c",
            self.cpus,
            "wrk",
            "-t1",
            "-c",
            &connections,
            "-d",
            &duration,
            "--timeout",
            "5s",
            "--latency",
            "-s",
            &script,
            &self.url,
            "--",
            &hosts,
        ]);
        let out = self
            .client
            .exec_timeout(&args, self.duration + Duration::from_secs(30))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "wrk failed ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        WrkReport::parse(&stdout).with_context(|| format!("reading wrk's report:\n{stdout}"))
    }
}

/// What wrk reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkReport {
    /// Requests per second (all responses, whatever their status).
    pub requests_per_second: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Responses received.
    pub requests: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
}

impl WrkReport {
    /// Parses wrk's `--latency` report.
    pub fn parse(text: &str) -> Result<Self> {
        let mut report = Self::default();
        let mut saw_rate = false;
        let (mut saw_p50, mut saw_p99) = (false, false);
        for line in text.lines().map(str::trim) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["Requests/sec:", rate] => {
                    report.requests_per_second = rate.parse().context("Requests/sec")?;
                    saw_rate = true;
                }
                ["50%", latency] => {
                    report.p50 = parse_latency(latency)?;
                    saw_p50 = true;
                }
                ["99%", latency] => {
                    report.p99 = parse_latency(latency)?;
                    saw_p99 = true;
                }
                [requests, "requests", "in", ..] => {
                    report.requests = requests.parse().context("requests")?;
                }
                ["Non-2xx", "or", "3xx", "responses:", count] => {
                    report.non_2xx = count.parse().context("Non-2xx responses")?;
                }
                ["Socket", "errors:", rest @ ..] => {
                    // connect 0, read 0, write 0, timeout 0
                    report.socket_errors = rest
                        .iter()
                        .filter_map(|v| v.trim_end_matches(',').parse::<u64>().ok())
                        .sum();
                }
                _ => {}
            }
        }
        if !(saw_rate && saw_p50 && saw_p99) {
            bail!("no Requests/sec or latency distribution in wrk's report");
        }
        Ok(report)
    }

    /// Responses that were errors, or requests that got none.
    pub fn failures(&self) -> u64 {
        self.non_2xx + self.socket_errors
    }
}

/// `812.00us`, `1.23ms`, `2.00s`, `1.50m` as a duration.
fn parse_latency(text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("latency {text:?} has no unit"))?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().with_context(|| format!("latency {text:?}"))?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("latency {text:?}: unknown unit"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 8s test @ http://198.18.0.1/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.44ms    1.13ms  20.22ms   83.51%
    Req/Sec    20.39k     4.18k   35.04k    80.00%
  Latency Distribution
     50%  812.00us
     75%    2.85ms
     90%    3.37ms
     99%    1.20s
  162382 requests in 8.00s, 80.99MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  20289.34
Transfer/sec:     10.12MB
";

    #[test]
    fn parses_the_latency_report() {
        let report = WrkReport::parse(REPORT).unwrap();
        assert_eq!(report.requests_per_second, 20289.34);
        assert_eq!(report.p50, Duration::from_micros(812));
        assert_eq!(report.p99, Duration::from_millis(1200));
        assert_eq!(report.requests, 162_382);
        assert_eq!(report.non_2xx, 12);
        assert_eq!(report.socket_errors, 3);
        assert_eq!(report.failures(), 15);
    }

    #[test]
    fn a_report_without_latencies_is_an_error() {
        assert!(WrkReport::parse("Requests/sec: 10\n").is_err());
        assert!(parse_latency("12").is_err());
        assert!(parse_latency("1.5xs").is_err());
    }
}
