//! `lab-udp-flood`: the UDP load generator of `cargo xtask bench l4`. It
//! sends small datagrams to one address from many flows (one connected
//! socket, so one source port, per flow) in batches with `sendmmsg`, as
//! fast as one core allows, for a fixed time, then prints one JSON line:
//! `{"sent":N,"errors":E,"seconds":S,"cpu_seconds":C,"waited_seconds":W}`
//! (datagrams the kernel accepted, failed calls, how long it sent, its CPU
//! time meanwhile (user and system, which includes the softirq work run on
//! its way out), and how long it waited for its CPU, from
//! `/proc/self/schedstat`). Pin it with `taskset`: the benchmark measures
//! the CPU time of that core.
//!
//! Usage: `lab-udp-flood --to ADDR:PORT [--flows N] [--seconds S]
//! [--payload BYTES]`

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use xdp_ingress_lab::process_cpu_time;

/// Datagrams per `sendmmsg` call.
const BATCH: usize = 64;
/// The longest run allowed, whatever `--seconds` says.
const MAX_SECONDS: f64 = 600.0;

fn usage() -> ! {
    eprintln!("usage: lab-udp-flood --to ADDR:PORT [--flows N] [--seconds S] [--payload BYTES]");
    std::process::exit(2);
}

/// What the command line asks for.
struct Options {
    to: SocketAddr,
    flows: usize,
    seconds: f64,
    payload: usize,
}

fn options() -> Options {
    let mut to = None;
    let (mut flows, mut seconds, mut payload) = (256usize, 3.0f64, 18usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--to" => to = Some(value.parse().unwrap_or_else(|_| usage())),
            "--flows" => flows = value.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = value.parse().unwrap_or_else(|_| usage()),
            "--payload" => payload = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let Some(to) = to else { usage() };
    if flows == 0 || !(seconds > 0.0 && seconds <= MAX_SECONDS) || payload > 1400 {
        usage();
    }
    Options {
        to,
        flows,
        seconds,
        payload,
    }
}

/// This thread's time waiting for a CPU so far (`/proc/self/schedstat`,
/// second field, nanoseconds).
fn waited() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().nth(1)?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn main() {
    let options = options();
    let bind: SocketAddr = if options.to.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap_or_else(|_| usage());
    let sockets: Vec<UdpSocket> = (0..options.flows)
        .map(|_| {
            let socket = UdpSocket::bind(bind).unwrap_or_else(|error| {
                eprintln!("lab-udp-flood: bind: {error}");
                std::process::exit(1)
            });
            socket.connect(options.to).unwrap_or_else(|error| {
                eprintln!("lab-udp-flood: connect {}: {error}", options.to);
                std::process::exit(1)
            });
            socket
        })
        .collect();
    let mut payload = vec![0u8; options.payload];
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte = i as u8;
    }
    let mut iovecs: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zero is a valid (empty) value.
    let mut messages: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
        .collect();
    for (message, iovec) in messages.iter_mut().zip(iovecs.iter_mut()) {
        message.msg_hdr.msg_iov = iovec;
        message.msg_hdr.msg_iovlen = 1;
    }
    let duration = Duration::from_secs_f64(options.seconds);
    let (mut sent, mut errors) = (0u64, 0u64);
    let waited_before = waited();
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    'sending: loop {
        for socket in &sockets {
            // SAFETY: `messages` holds BATCH headers pointing at `iovecs` and
            // `payload`, which outlive the call; the sockets are connected.
            let count = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    messages.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    0,
                )
            };
            if count < 0 {
                errors += 1;
            } else {
                sent += count as u64;
            }
        }
        if started.elapsed() >= duration {
            break 'sending;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = (process_cpu_time() - cpu_before).as_secs_f64();
    let waited_seconds = (waited() - waited_before).as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"errors\":{errors},\"seconds\":{seconds:.6},\"cpu_seconds\":{cpu_seconds:.6},\"waited_seconds\":{waited_seconds:.6}}}"
    );
}
