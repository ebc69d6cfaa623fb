//! The proxies a benchmark compares, started in the lab the same way: on
//! the proxy's CPU, with the configuration of N Ingresses.

use anyhow::{Result, bail};

use super::{
    Binaries,
    lab::{BenchLab, ENDPOINTS, PROXY_CPU},
    measure,
    nginx::{Nginx, UpstreamLayout},
    report,
    xdp::{XdpIngress, XdpMode},
};

/// How the proxies are configured, beyond their Ingresses.
#[derive(Debug, Clone, Copy)]
pub struct ProxyOptions {
    /// Where xdp-ingress's XDP program runs.
    pub xdp_mode: XdpMode,
    /// nginx's upstream layout.
    pub nginx_upstreams: UpstreamLayout,
}

/// The proxies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// xdp-ingress.
    XdpIngress,
    /// nginx as ingress-nginx configures it.
    Nginx,
}

impl Proxy {
    /// How the report names it.
    pub fn name(self) -> &'static str {
        match self {
            Proxy::XdpIngress => "xdp-ingress",
            Proxy::Nginx => "nginx",
        }
    }
}

/// A proxy running in the lab, as a guard (stopped on drop).
pub enum UnderTest {
    /// `xdp-ingress run`.
    XdpIngress(XdpIngress),
    /// nginx, master and worker.
    Nginx(Nginx),
}

impl UnderTest {
    /// Starts `proxy` in `lab` on [`PROXY_CPU`] with `count` Ingresses;
    /// returns once it serves.
    pub fn start(
        proxy: Proxy,
        lab: &BenchLab,
        binaries: &Binaries,
        count: usize,
        options: &ProxyOptions,
    ) -> Result<Self> {
        Ok(match proxy {
            Proxy::XdpIngress => {
                Self::XdpIngress(XdpIngress::start(lab, binaries, count, options.xdp_mode)?)
            }
            Proxy::Nginx => Self::Nginx(Nginx::start(
                lab.edge(),
                PROXY_CPU,
                lab.proxy_addr(),
                count,
                &ENDPOINTS,
                options.nginx_upstreams,
            )?),
        })
    }

    /// Every process of the proxy (for memory and CPU time).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Self::XdpIngress(daemon) => vec![daemon.pid()],
            Self::Nginx(nginx) => nginx.pids(),
        }
    }

    /// How it runs: its workers, as the kernel sees them.
    pub fn workers(&self) -> String {
        match self {
            Self::XdpIngress(daemon) => {
                let workers = measure::thread_names(daemon.pid())
                    .iter()
                    .filter(|name| name.starts_with("tokio-rt-worker"))
                    .count();
                format!("{workers} tokio worker thread(s)")
            }
            Self::Nginx(nginx) => format!(
                "{} worker process(es)",
                measure::children(nginx.master_pid()).len()
            ),
        }
    }

    /// Fails, with its log, when it has stopped.
    pub fn check_running(&mut self) -> Result<()> {
        match self {
            Self::XdpIngress(daemon) => {
                if !daemon.running() {
                    bail!("xdp-ingress stopped:\n{}", daemon.log());
                }
            }
            Self::Nginx(nginx) => {
                if !nginx.running() {
                    bail!("nginx stopped:\n{}", nginx.error_log());
                }
            }
        }
        Ok(())
    }

    /// The last `lines` lines of what it logged (nginx: its error log),
    /// each counted once with how often it repeats (`[x123]`).
    pub fn log_summary(&self, lines: usize) -> Vec<String> {
        let log = match self {
            Self::XdpIngress(daemon) => daemon.log(),
            Self::Nginx(nginx) => nginx.error_log(),
        };
        summarize_log(&log, lines)
    }

    /// What the proxy itself says its last reload took, when it says.
    pub fn last_reload(&self) -> Option<String> {
        match self {
            Self::XdpIngress(daemon) => daemon.last_reload().map(|(whole, table)| {
                format!(
                    "the daemon's reload took {} (the route table {})",
                    report::latency(whole),
                    report::latency(table)
                )
            }),
            Self::Nginx(_) => None,
        }
    }

    /// The change: a new Ingress `name` for `host` (to the Service of
    /// Ingress 0); returns once the proxy was told.
    pub fn add_ingress(&self, name: &str, host: &str) -> Result<()> {
        match self {
            Self::XdpIngress(daemon) => daemon.add_ingress(name, host),
            Self::Nginx(nginx) => nginx.add_ingress(name, host),
        }
    }
}

/// The distinct messages of a log (timestamps, pids and connection numbers
/// left out), most frequent first, at most `limit` of them.
fn summarize_log(log: &str, limit: usize) -> Vec<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let message = message_of(line);
        match counts.iter_mut().find(|(m, _)| *m == message) {
            Some((_, n)) => *n += 1,
            None => counts.push((message, 1)),
        }
    }
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    counts
        .into_iter()
        .take(limit)
        .map(|(message, n)| format!("[x{n}] {message}"))
        .collect()
}

/// A log line without its timestamp, level, pid and connection number, and
/// without nginx's `, client: ...` context.
fn message_of(line: &str) -> String {
    // nginx: "2026/11/25 14:02:03 [error] 123#123: *45 message, client: ..."
    // xdp-ingress: "2026-11-25T14:02:03.1Z  WARN target: message key=value"
    let text = match line.split_once("] ") {
        Some((_, rest)) => rest
            .split_once(": ")
            .map_or(rest, |(_, message)| message)
            .trim_start_matches(|c: char| c == '*' || c.is_ascii_digit())
            .trim_start(),
        None => line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest)
            .trim_start(),
    };
    text.split(", client:")
        .next()
        .unwrap_or("")
        .chars()
        .take(160)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_summarized_by_message() {
        let log = "\
2026/11/25 14:02:03 [alert] 12#12: *45 16384 worker_connections are not enough while connecting to upstream, client: 198.18.0.2, server: h1
2026/11/25 14:02:04 [alert] 12#12: *46 16384 worker_connections are not enough while connecting to upstream, client: 198.18.0.2, server: h2
2026/11/25 14:02:05 [notice] 11#11: signal process started
";
        assert_eq!(
            summarize_log(log, 5),
            [
                "[x2] 16384 worker_connections are not enough while connecting to upstream",
                "[x1] signal process started",
            ]
        );
    }
}
