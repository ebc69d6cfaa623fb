//! xdp-ingress and nginx side by side, as `bench l7` and `bench tls` run
//! them: a copy of the lab per proxy (both started, each idle while the
//! other is measured), rounds alternating between them (so whatever else
//! the machine does spreads over both), and the CPU accounting of a round.

use std::time::Instant;

use anyhow::Result;

use super::{
    Binaries, Progress, check_interrupted,
    lab::{BenchLab, LOAD_CPU_INDEX, PROXY_CPU_INDEX},
    measure::{self, CpuSample},
    under_test::{Proxy, UnderTest},
};

/// The proxies, in the order they are measured.
pub const PROXIES: [Proxy; 2] = [Proxy::XdpIngress, Proxy::Nginx];

/// One identical lab per proxy of [`PROXIES`].
pub struct ProxyLabs([BenchLab; 2]);

impl ProxyLabs {
    /// Creates the labs and describes each in `progress`.
    pub fn create(binaries: &Binaries, progress: &Progress) -> Result<Self> {
        progress.phase("Creating a lab per proxy (client, edge, backends)");
        let labs = [BenchLab::create(binaries)?, BenchLab::create(binaries)?];
        for (proxy, lab) in PROXIES.iter().zip(&labs) {
            progress.detail(&format!("for {}:", proxy.name()));
            for line in lab.describe() {
                progress.detail(&format!("  {line}"));
            }
        }
        Ok(Self(labs))
    }

    /// The lab of `proxy`.
    pub fn of(&self, proxy: Proxy) -> &BenchLab {
        &self.0[PROXIES.iter().position(|p| *p == proxy).unwrap_or(0)]
    }
}

/// Where the CPU time of one round went.
#[derive(Debug, Clone, Copy)]
pub struct RoundCpu {
    /// CPU time of the proxy's processes per second of load (1.0 = a core).
    pub proxy_cpu: f64,
    /// Time its threads were runnable but waited for a CPU, per second of
    /// load: other work on its core (should be about 0).
    pub proxy_waited: f64,
    /// How busy the proxy's core was (all processes, softirqs included).
    pub proxy_core_busy: f64,
    /// How busy the load's core was (all processes, softirqs included).
    pub load_core_busy: f64,
}

/// Runs `load`, one round against `under_test`, and accounts for the CPU
/// time it took; fails when interrupted or when the proxy died during it.
pub fn account_round<T>(
    under_test: &mut UnderTest,
    load: impl FnOnce() -> Result<T>,
) -> Result<(T, RoundCpu)> {
    let pids = under_test.pids();
    let cpu_before = CpuSample::now()?;
    let (time_before, delay_before) = (measure::cpu_time(&pids), measure::run_delay(&pids));
    let clock = Instant::now();
    let measured = load()?;
    let wall = clock.elapsed().as_secs_f64();
    let cpu_after = CpuSample::now()?;
    // Saturating: a thread that ended during the round takes its share of
    // the per-thread sums with it.
    let proxy_cpu = measure::cpu_time(&pids)
        .saturating_sub(time_before)
        .as_secs_f64()
        / wall;
    let proxy_waited = measure::run_delay(&pids)
        .saturating_sub(delay_before)
        .as_secs_f64()
        / wall;
    check_interrupted()?;
    under_test.check_running()?;
    Ok((
        measured,
        RoundCpu {
            proxy_cpu,
            proxy_waited,
            proxy_core_busy: cpu_after.busy_since(&cpu_before, PROXY_CPU_INDEX),
            load_core_busy: cpu_after.busy_since(&cpu_before, LOAD_CPU_INDEX),
        },
    ))
}

/// `rounds` rounds over the `started` proxies in turn (1, 2, 1, 2, ...):
/// `round(number, proxy)` measures one. Returns each proxy's samples, in
/// the order of `started`.
pub fn alternate_rounds<P, S>(
    rounds: usize,
    started: &mut [P],
    mut round: impl FnMut(usize, &mut P) -> Result<S>,
) -> Result<Vec<Vec<S>>> {
    let mut samples: Vec<Vec<S>> = started.iter().map(|_| Vec::new()).collect();
    for number in 1..=rounds {
        for (proxy, samples) in started.iter_mut().zip(&mut samples) {
            check_interrupted()?;
            samples.push(round(number, proxy)?);
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use anyhow::bail;

    use super::*;

    #[test]
    fn rounds_alternate_between_the_proxies() {
        let mut order = Vec::new();
        let samples = alternate_rounds(3, &mut ['a', 'b'], |round, proxy| {
            order.push((round, *proxy));
            Ok(format!("{proxy}{round}"))
        })
        .unwrap();
        assert_eq!(
            order,
            [(1, 'a'), (1, 'b'), (2, 'a'), (2, 'b'), (3, 'a'), (3, 'b')]
        );
        assert_eq!(samples, [["a1", "a2", "a3"], ["b1", "b2", "b3"]]);
    }

    #[test]
    fn a_failed_round_ends_the_rounds() {
        let mut measured = 0;
        let result = alternate_rounds(3, &mut ['a', 'b'], |round, proxy| {
            if (round, *proxy) == (2, 'b') {
                bail!("b died");
            }
            measured += 1;
            Ok(())
        });
        assert!(result.is_err());
        assert_eq!(measured, 3);
    }
}
