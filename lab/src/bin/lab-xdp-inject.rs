//! `lab-xdp-inject`: the second load of `cargo xtask bench l4`. It makes
//! frames arrive at a network device from inside the kernel, with no
//! sender: `BPF_PROG_TEST_RUN` in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`) runs an XDP program on each frame as if
//! the device had received it, then carries out its verdict for real: a
//! redirect is sent on (in batches, as a NIC driver's poll does), a pass
//! becomes an skb for the device's network stack (nftables, routing,
//! forwarding), a drop frees the frame. So the CPU time of the run is the
//! receiving host's own work per packet, without the sender's system calls
//! and socket layer that dominate a veth lab's load generator.
//!
//! The program is the one attached to the device (`--prog-id`, as `ip -d
//! link` shows it), else a two-instruction `XDP_PASS` program loaded here
//! (the stack does all the work), attached to the device for the run: a
//! test run of a program no device uses rebuilds the kernel's XDP
//! dispatcher twice, which sleeps for milliseconds. The frames are IPv4 UDP
//! datagrams from `--from` to `--to`, one flow per source port from
//! `--from`'s port up (`--flows`), round robin until `--seconds` have
//! passed. Each test run is one batch (`--batch` frames): the kernel copies
//! the frame into a page on its first use in a run and reuses the page
//! as it is later in the same run, so a frame that a program or the stack
//! rewrote (NAT, TTL, MAC addresses) would come back rewritten. Run it in
//! the device's network namespace (the ifindex is looked up there), pinned
//! with `taskset`.
//!
//! Prints one JSON line: `{"frames":N,"calls":C,"seconds":S,"run_seconds":R,
//! "cpu_seconds":U}`: frames run, test runs made, wall time, the kernel's
//! own measure of the runs (their `duration` times their frames), and this
//! process's CPU time (user and system).
//!
//! Usage: `lab-xdp-inject --dev DEV --from IP:PORT --to IP:PORT
//! [--src-mac MAC] [--prog-id ID] [--flows N] [--seconds S] [--payload BYTES]
//! [--batch N]`

use std::{
    ffi::CString,
    net::SocketAddrV4,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use xdp_ingress_lab::{checksum, process_cpu_time};

/// The longest run allowed, whatever `--seconds` says.
const MAX_SECONDS: f64 = 600.0;
/// `bpf(2)` commands.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_PROG_TYPE_XDP`.
const PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP`, the attach type of an XDP program on a device.
const ATTACH_XDP: u32 = 37;
/// Frames are live: their verdicts are carried out.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// The kernel's most frames per batch (`TEST_XDP_MAX_BATCH`).
const MAX_BATCH: u32 = 256;
/// `union bpf_attr` as this tool fills it: larger than any command's
/// fields it uses, the rest zero (the kernel checks that).
const ATTR_SIZE: usize = 128;

fn usage() -> ! {
    eprintln!(
        "usage: lab-xdp-inject --dev DEV --from IP:PORT --to IP:PORT [--src-mac MAC] \
         [--prog-id ID] [--flows N] [--seconds S] [--payload BYTES] [--batch N]"
    );
    std::process::exit(2);
}

fn fail(what: &str) -> ! {
    eprintln!("lab-xdp-inject: {what}");
    std::process::exit(1);
}

/// What the command line asks for.
struct Options {
    dev: String,
    from: SocketAddrV4,
    to: SocketAddrV4,
    src_mac: [u8; 6],
    prog_id: Option<u32>,
    flows: u16,
    seconds: f64,
    payload: usize,
    batch: u32,
}

fn options() -> Options {
    let (mut dev, mut from, mut to, mut prog_id) = (None, None, None, None);
    let mut src_mac = [0x02, 0, 0, 0, 0, 0x01];
    let (mut flows, mut seconds, mut payload, mut batch) = (256u16, 3.0f64, 18usize, 64u32);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--dev" => dev = Some(value),
            "--from" => from = Some(value.parse().unwrap_or_else(|_| usage())),
            "--to" => to = Some(value.parse().unwrap_or_else(|_| usage())),
            "--src-mac" => src_mac = parse_mac(&value).unwrap_or_else(|| usage()),
            "--prog-id" => prog_id = Some(value.parse().unwrap_or_else(|_| usage())),
            "--flows" => flows = value.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = value.parse().unwrap_or_else(|_| usage()),
            "--payload" => payload = value.parse().unwrap_or_else(|_| usage()),
            "--batch" => batch = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let (Some(dev), Some(from), Some(to)) = (dev, from, to) else {
        usage()
    };
    let from: SocketAddrV4 = from;
    if flows == 0
        || u32::from(from.port()) + u32::from(flows) > 65_536
        || !(seconds > 0.0 && seconds <= MAX_SECONDS)
        || payload > 1400
        || !(1..=MAX_BATCH).contains(&batch)
    {
        usage();
    }
    Options {
        dev,
        from,
        to,
        src_mac,
        prog_id,
        flows,
        seconds,
        payload,
        batch,
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The device's MAC address, as its sysfs entry in this network namespace
/// says.
fn device_mac(dev: &str) -> [u8; 6] {
    let path = format!("/sys/class/net/{dev}/address");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| parse_mac(text.trim()))
        .unwrap_or_else(|| fail(&format!("cannot read {path}: is {dev} in this namespace?")))
}

fn ifindex(dev: &str) -> u32 {
    let name = CString::new(dev).unwrap_or_else(|_| usage());
    // SAFETY: a NUL-terminated name we own.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        fail(&format!("no device {dev} in this network namespace"));
    }
    index
}

/// An Ethernet frame with an IPv4 UDP datagram of `payload` bytes from
/// `from` to `to`, both checksums set.
fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: usize,
) -> Vec<u8> {
    let udp_len = 8 + payload;
    let ip_len = 20 + udp_len;
    let mut frame = Vec::with_capacity(14 + ip_len);
    frame.extend(dst_mac);
    frame.extend(src_mac);
    frame.extend([0x08, 0x00]);
    let ip_start = frame.len();
    frame.extend([0x45, 0]);
    frame.extend((ip_len as u16).to_be_bytes());
    frame.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
    frame.extend(from.ip().octets());
    frame.extend(to.ip().octets());
    let ip_check = checksum(&[&frame[ip_start..]]);
    frame[ip_start + 10..ip_start + 12].copy_from_slice(&ip_check.to_be_bytes());
    let udp_start = frame.len();
    frame.extend(from.port().to_be_bytes());
    frame.extend(to.port().to_be_bytes());
    frame.extend((udp_len as u16).to_be_bytes());
    frame.extend([0, 0]);
    frame.extend((0..payload).map(|i| i as u8));
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend(from.ip().octets());
    pseudo.extend(to.ip().octets());
    pseudo.extend([0, 17]);
    pseudo.extend((udp_len as u16).to_be_bytes());
    let udp_check = match checksum(&[&pseudo, &frame[udp_start..]]) {
        // Zero means "no checksum" in UDP over IPv4.
        0 => 0xffff,
        sum => sum,
    };
    frame[udp_start + 6..udp_start + 8].copy_from_slice(&udp_check.to_be_bytes());
    frame
}

/// `bpf(cmd, attr)`: the result, or the error.
fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` of ATTR_SIZE bytes
    // laid out for `cmd`; pointers in it point at buffers the caller keeps
    // alive for the call.
    let result = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE) };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn put_u32(attr: &mut [u8; ATTR_SIZE], at: usize, value: u32) {
    attr[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; ATTR_SIZE], at: usize, value: u64) {
    attr[at..at + 8].copy_from_slice(&value.to_ne_bytes());
}

fn get_u32(attr: &[u8; ATTR_SIZE], at: usize) -> u32 {
    u32::from_ne_bytes(attr[at..at + 4].try_into().expect("4 bytes"))
}

/// A file descriptor of the loaded program `id`.
fn program_by_id(id: u32) -> OwnedFd {
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, id);
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
        .unwrap_or_else(|error| fail(&format!("no BPF program {id}: {error}")));
    // SAFETY: a new descriptor the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A new XDP program that passes every frame to the stack:
/// `r0 = XDP_PASS; exit`.
fn pass_program() -> OwnedFd {
    let instructions: [[u8; 8]; 2] = [
        [0xb7, 0x00, 0, 0, 2, 0, 0, 0],
        [0x95, 0x00, 0, 0, 0, 0, 0, 0],
    ];
    let license = c"GPL";
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, PROG_TYPE_XDP);
    put_u32(&mut attr, 4, instructions.len() as u32);
    put_u64(&mut attr, 8, instructions.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..48 + 9].copy_from_slice(b"lab_pass\0");
    put_u32(&mut attr, 68, ATTACH_XDP);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)
        .unwrap_or_else(|error| fail(&format!("loading the XDP_PASS program: {error}")));
    // SAFETY: a new descriptor the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Attaches `program` to device `ifindex` (the driver's mode) until the
/// returned link is closed, at exit.
fn attach(program: &OwnedFd, ifindex: u32) -> OwnedFd {
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, program.as_raw_fd() as u32);
    put_u32(&mut attr, 4, ifindex);
    put_u32(&mut attr, 8, ATTACH_XDP);
    let fd = bpf(BPF_LINK_CREATE, &mut attr).unwrap_or_else(|error| {
        fail(&format!(
            "attaching the XDP_PASS program: {error} (does the device have a program already?)"
        ))
    });
    // SAFETY: a new descriptor the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// `struct xdp_md` for the test run: the frame arrived on `ifindex`,
/// queue 0.
fn xdp_md(frame_len: usize, ifindex: u32) -> [u32; 6] {
    [0, frame_len as u32, 0, ifindex, 0, 0]
}

/// One live test run of one batch of `batch` copies of `frame`: the
/// kernel's average duration per frame, in nanoseconds.
fn run_live(program: &OwnedFd, frame: &[u8], ctx: &[u32; 6], batch: u32) -> u32 {
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, program.as_raw_fd() as u32);
    put_u32(&mut attr, 8, frame.len() as u32);
    put_u64(&mut attr, 16, frame.as_ptr() as u64);
    put_u32(&mut attr, 32, batch);
    put_u32(&mut attr, 40, size_of_val(ctx) as u32);
    put_u64(&mut attr, 48, ctx.as_ptr() as u64);
    put_u32(&mut attr, 64, BPF_F_TEST_XDP_LIVE_FRAMES);
    put_u32(&mut attr, 72, batch);
    bpf(BPF_PROG_TEST_RUN, &mut attr)
        .unwrap_or_else(|error| fail(&format!("BPF_PROG_TEST_RUN (live frames): {error}")));
    get_u32(&attr, 36)
}

fn main() {
    let options = options();
    let ifindex = ifindex(&options.dev);
    let dst_mac = device_mac(&options.dev);
    let (program, _link) = match options.prog_id {
        Some(id) => (program_by_id(id), None),
        None => {
            let program = pass_program();
            let link = attach(&program, ifindex);
            (program, Some(link))
        }
    };
    let frames: Vec<Vec<u8>> = (0..options.flows)
        .map(|flow| {
            let from = SocketAddrV4::new(*options.from.ip(), options.from.port() + flow);
            udp_frame(options.src_mac, dst_mac, from, options.to, options.payload)
        })
        .collect();
    let ctx = xdp_md(frames[0].len(), ifindex);
    let duration = Duration::from_secs_f64(options.seconds);
    let (mut frames_run, mut calls, mut run_ns) = (0u64, 0u64, 0u64);
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    'running: loop {
        for frame in &frames {
            let average = run_live(&program, frame, &ctx, options.batch);
            frames_run += u64::from(options.batch);
            calls += 1;
            run_ns += u64::from(average) * u64::from(options.batch);
            if started.elapsed() >= duration {
                break 'running;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = (process_cpu_time() - cpu_before).as_secs_f64();
    let run_seconds = run_ns as f64 / 1e9;
    println!(
        "{{\"frames\":{frames_run},\"calls\":{calls},\"seconds\":{seconds:.6},\"run_seconds\":{run_seconds:.6},\"cpu_seconds\":{cpu_seconds:.6}}}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_frame_carries_valid_checksums() {
        let from = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 10_000);
        let to = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 9053);
        let frame = udp_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], from, to, 18);
        assert_eq!(frame.len(), 60, "64 bytes on the wire with the FCS");
        assert_eq!(&frame[0..6], &[2, 0, 0, 0, 0, 2], "to the device's MAC");
        // A header with its checksum in sums to all ones: checksum 0.
        assert_eq!(checksum(&[&frame[14..34]]), 0, "IPv4 header checksum");
        let pseudo = [198, 18, 0, 2, 198, 18, 0, 1, 0, 17, 0, 26];
        assert_eq!(checksum(&[&pseudo, &frame[34..]]), 0, "UDP checksum");
        assert_eq!(u16::from_be_bytes([frame[34], frame[35]]), 10_000);
        assert_eq!(u16::from_be_bytes([frame[36], frame[37]]), 9053);
    }

    #[test]
    fn macs_are_read_in_colon_notation() {
        assert_eq!(
            parse_mac("02:ab:0c:00:ff:10"),
            Some([0x02, 0xab, 0x0c, 0x00, 0xff, 0x10])
        );
        assert_eq!(parse_mac("02:ab:0c:00:ff"), None);
        assert_eq!(parse_mac("02:ab:0c:00:ff:10:11"), None);
        assert_eq!(parse_mac("zz:ab:0c:00:ff:10"), None);
    }
}
