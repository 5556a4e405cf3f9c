//! rig-bench: the load generator of `cargo xtask bench xen`, run in the
//! rig's Linux domUs. The same program drives both paths a bench compares
//! (xen-share's xensnet/xensblk and Linux's netfront/blkfront), so the
//! figures differ only by the path. Each subcommand prints one line of
//! `key=value` figures, which the scenario hands to xtask.
//!
//! ```text
//! rig-bench tcp-sink PORT                   one connection: count bytes to EOF, send the count back
//! rig-bench tcp-send ADDR:PORT SECS         stream for SECS, then wait for the sink's count
//! rig-bench udp-sink PORT                   count datagrams until the sender's end marker
//! rig-bench udp-send ADDR:PORT SIZE SECS    datagrams of SIZE bytes as fast as they go, for SECS
//! rig-bench disk DEV rand|seq read|write BS JOBS SECS
//!                                           O_DIRECT I/O of BS bytes by JOBS threads (one request
//!                                           in flight each) for SECS
//! ```
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first bytes of the datagrams that end a UDP run.
const END_MARKER: &[u8] = b"RIG-BENCH-END";
/// A UDP sink gives up this long after the last datagram (the end markers
/// were lost).
const UDP_IDLE: Duration = Duration::from_secs(3);
/// How long a sink waits for its first connection or datagram.
const FIRST_WAIT: Duration = Duration::from_secs(120);
/// Largest accepted I/O size and job count (bounds what a typo allocates).
const MAX_BS: usize = 16 << 20;
const MAX_JOBS: usize = 64;
const MAX_SECS: f64 = 600.0;

#[derive(Debug, PartialEq)]
enum Cmd {
    TcpSink {
        port: u16,
    },
    TcpSend {
        to: SocketAddr,
        secs: f64,
    },
    UdpSink {
        port: u16,
    },
    UdpSend {
        to: SocketAddr,
        size: usize,
        secs: f64,
    },
    Disk {
        dev: String,
        random: bool,
        write: bool,
        bs: usize,
        jobs: usize,
        secs: f64,
    },
}

const USAGE: &str = "usage: rig-bench tcp-sink PORT | tcp-send ADDR:PORT SECS | udp-sink PORT | \
udp-send ADDR:PORT SIZE SECS | disk DEV rand|seq read|write BS JOBS SECS";

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v > 0.0 && v <= MAX_SECS) {
        return Err(format!("seconds must be in (0, {MAX_SECS}], not {s}"));
    }
    Ok(v)
}

fn parse_num(s: &str, what: &str, max: usize) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("{what} '{s}' is not a number"))?;
    if v == 0 || v > max {
        return Err(format!("{what} must be in 1..={max}, not {v}"));
    }
    Ok(v)
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not an ADDR:PORT (numeric IPv4 or [IPv6])"))
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse().map_err(|_| format!("'{s}' is not a port"))
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(match a.as_slice() {
        ["tcp-sink", port] => Cmd::TcpSink {
            port: parse_port(port)?,
        },
        ["tcp-send", to, secs] => Cmd::TcpSend {
            to: parse_addr(to)?,
            secs: parse_secs(secs)?,
        },
        ["udp-sink", port] => Cmd::UdpSink {
            port: parse_port(port)?,
        },
        ["udp-send", to, size, secs] => {
            let size = parse_num(size, "size", 65_000)?;
            if size < END_MARKER.len() + 1 {
                // A data datagram must not read as an end marker.
                return Err(format!("size must be at least {}", END_MARKER.len() + 1));
            }
            Cmd::UdpSend {
                to: parse_addr(to)?,
                size,
                secs: parse_secs(secs)?,
            }
        }
        ["disk", dev, pattern, op, bs, jobs, secs] => {
            let random = match *pattern {
                "rand" => true,
                "seq" => false,
                p => return Err(format!("pattern '{p}': want rand or seq")),
            };
            let write = match *op {
                "read" => false,
                "write" => true,
                o => return Err(format!("operation '{o}': want read or write")),
            };
            let bs = parse_num(bs, "block size", MAX_BS)?;
            if bs % 512 != 0 {
                return Err(format!(
                    "block size {bs} is not a multiple of 512 (O_DIRECT)"
                ));
            }
            Cmd::Disk {
                dev: dev.to_string(),
                random,
                write,
                bs,
                jobs: parse_num(jobs, "jobs", MAX_JOBS)?,
                secs: parse_secs(secs)?,
            }
        }
        _ => return Err(USAGE.into()),
    })
}

/// The figures line: `WHAT key=value ...`, rates with 3 decimals.
fn report(what: &str, figures: &[(&str, f64)]) -> String {
    let mut s = what.to_string();
    for (k, v) in figures {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            s.push_str(&format!(" {k}={v:.0}"));
        } else {
            s.push_str(&format!(" {k}={v:.3}"));
        }
    }
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rig-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let r = match cmd {
        Cmd::TcpSink { port } => tcp_sink(port),
        Cmd::TcpSend { to, secs } => tcp_send(to, secs),
        Cmd::UdpSink { port } => udp_sink(port),
        Cmd::UdpSend { to, size, secs } => udp_send(to, size, secs),
        Cmd::Disk {
            dev,
            random,
            write,
            bs,
            jobs,
            secs,
        } => disk(&dev, random, write, bs, jobs, secs),
    };
    match r {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rig-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<String, String>;

fn tcp_sink(port: u16) -> Res {
    let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind :{port}: {e}"))?;
    tcp_sink_on(&l)
}

fn tcp_sink_on(l: &TcpListener) -> Res {
    let (mut s, peer) = l.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = vec![0u8; 256 << 10];
    let mut n: u64 = 0;
    let mut first: Option<Instant> = None;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                first.get_or_insert_with(Instant::now);
                n += k as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read from {peer}: {e}")),
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    s.write_all(&n.to_le_bytes())
        .map_err(|e| format!("sending the count to {peer}: {e}"))?;
    Ok(report("tcp-sink", &[("bytes", n as f64), ("secs", secs)]))
}

fn connect_retry(to: SocketAddr) -> Result<TcpStream, String> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < until => {
                if e.kind() != ErrorKind::ConnectionRefused {
                    eprintln!("rig-bench: connect {to}: {e}; again");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("connect {to}: {e}")),
        }
    }
}

/// Streams for `secs`, then half-closes and waits for the sink's count:
/// the time is from connect to that count, so every byte arrived in it.
fn tcp_send(to: SocketAddr, secs: f64) -> Res {
    let mut s = connect_retry(to)?;
    let buf = vec![0x5au8; 64 << 10];
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs_f64(secs);
    let mut sent: u64 = 0;
    while Instant::now() < stop {
        s.write_all(&buf)
            .map_err(|e| format!("write to {to}: {e}"))?;
        sent += buf.len() as u64;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| format!("timeout: {e}"))?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)
        .map_err(|e| format!("the sink's count: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    let got = u64::from_le_bytes(ack);
    if got != sent {
        return Err(format!("sent {sent} bytes, the sink counted {got}"));
    }
    Ok(report(
        "tcp",
        &[
            ("bytes", sent as f64),
            ("secs", secs),
            ("mbit_s", sent as f64 * 8.0 / secs / 1e6),
        ],
    ))
}

fn udp_sink(port: u16) -> Res {
    let s = UdpSocket::bind(("0.0.0.0", port)).map_err(|e| format!("bind :{port}: {e}"))?;
    udp_sink_on(&s)
}

fn udp_sink_on(s: &UdpSocket) -> Res {
    let mut buf = vec![0u8; 65536];
    s.set_read_timeout(Some(FIRST_WAIT))
        .map_err(|e| e.to_string())?;
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut ended = false;
    loop {
        match s.recv(&mut buf) {
            Ok(k) => {
                if buf[..k].starts_with(END_MARKER) {
                    ended = true;
                    break;
                }
                let now = Instant::now();
                if first.is_none() {
                    first = Some(now);
                    s.set_read_timeout(Some(UDP_IDLE))
                        .map_err(|e| e.to_string())?;
                }
                last = now;
                packets += 1;
                bytes += k as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if first.is_none() {
                    return Err(format!("no datagram in {} s", FIRST_WAIT.as_secs()));
                }
                break;
            }
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let pps = if secs > 0.0 {
        packets as f64 / secs
    } else {
        0.0
    };
    Ok(report(
        "udp-sink",
        &[
            ("packets", packets as f64),
            ("bytes", bytes as f64),
            ("secs", secs),
            ("pps", pps),
            ("ended", if ended { 1.0 } else { 0.0 }),
        ],
    ))
}

fn udp_send(to: SocketAddr, size: usize, secs: f64) -> Res {
    let s = UdpSocket::bind(("0.0.0.0", 0)).map_err(|e| format!("bind: {e}"))?;
    s.connect(to).map_err(|e| format!("connect {to}: {e}"))?;
    let buf = vec![0x33u8; size];
    let t0 = Instant::now();
    let stop = t0 + Duration::from_secs_f64(secs);
    let (mut packets, mut errors) = (0u64, 0u64);
    while Instant::now() < stop {
        match s.send(&buf) {
            Ok(_) => packets += 1,
            // ENOBUFS, or ECONNREFUSED from an ICMP error: counted, the
            // run goes on (the sink's count is the figure).
            Err(_) => errors += 1,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    for _ in 0..10 {
        let _ = s.send(END_MARKER);
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(report(
        "udp-send",
        &[
            ("packets", packets as f64),
            ("secs", secs),
            ("pps", packets as f64 / secs),
            ("errors", errors as f64),
        ],
    ))
}

/// A buffer of `len` bytes aligned to 4096 (O_DIRECT), inside `v`.
fn aligned(v: &mut [u8], len: usize) -> &mut [u8] {
    let off = v.as_ptr().align_offset(4096);
    &mut v[off..off + len]
}

/// xorshift64*: offsets for random I/O (no dependency, reproducible).
fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The offset of a job's `i`-th request: random blocks over the device, or
/// the job's own sequential stream wrapping at the end.
fn offset(random: bool, rng: &mut u64, i: u64, job: usize, jobs: usize, blocks: u64) -> u64 {
    if random {
        next_rand(rng) % blocks
    } else {
        (i * jobs as u64 + job as u64) % blocks
    }
}

fn disk(dev: &str, random: bool, write: bool, bs: usize, jobs: usize, secs: f64) -> Res {
    let mut f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(dev)
        .map_err(|e| format!("open {dev} (O_DIRECT): {e}"))?;
    let size = f
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("size of {dev}: {e}"))?;
    let blocks = size / bs as u64;
    if blocks == 0 {
        return Err(format!(
            "{dev} ({size} bytes) is smaller than one block of {bs}"
        ));
    }
    let f: Arc<File> = Arc::new(f);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..jobs)
        .map(|job| {
            let (f, stop, ops) = (f.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || -> Result<(), String> {
                let mut v = vec![0xa5u8; bs + 4096];
                let buf = aligned(&mut v, bs);
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((job as u64 + 1) << 32);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let at = offset(random, &mut rng, i, job, jobs, blocks) * bs as u64;
                    let r = if write {
                        f.write_all_at(buf, at)
                    } else {
                        f.read_exact_at(buf, at)
                    };
                    r.map_err(|e| format!("I/O at {at}: {e}"))?;
                    ops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => err = Some(e),
            Err(_) => err = Some("a job panicked".into()),
        }
    }
    // The requests in flight at the stop are counted and finished in this time.
    let secs = t0.elapsed().as_secs_f64();
    if let Some(e) = err {
        return Err(e);
    }
    let n = ops.load(Ordering::Relaxed);
    let bytes = n * bs as u64;
    Ok(report(
        "disk",
        &[
            ("random", if random { 1.0 } else { 0.0 }),
            ("write", if write { 1.0 } else { 0.0 }),
            ("bs", bs as f64),
            ("jobs", jobs as f64),
            ("ops", n as f64),
            ("bytes", bytes as f64),
            ("secs", secs),
            ("iops", n as f64 / secs),
            ("mib_s", bytes as f64 / secs / 1048576.0),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse(&args("tcp-send 10.77.0.5:5001 4")),
            Ok(Cmd::TcpSend {
                to: "10.77.0.5:5001".parse().unwrap(),
                secs: 4.0
            })
        );
        assert_eq!(
            parse(&args("disk /dev/xsba rand write 4096 8 5")),
            Ok(Cmd::Disk {
                dev: "/dev/xsba".into(),
                random: true,
                write: true,
                bs: 4096,
                jobs: 8,
                secs: 5.0
            })
        );
        assert_eq!(
            parse(&args("udp-send 1.2.3.4:9 64 2.5")),
            Ok(Cmd::UdpSend {
                to: "1.2.3.4:9".parse().unwrap(),
                size: 64,
                secs: 2.5
            })
        );
    }

    #[test]
    fn bad_commands_are_refused() {
        for bad in [
            "",
            "tcp-send 10.77.0.5 4",
            "tcp-send 10.77.0.5:5001 0",
            "tcp-send 10.77.0.5:5001 nan",
            "tcp-send 10.77.0.5:5001 1e9",
            "udp-send 1.2.3.4:9 4 1",
            "disk /dev/x rand read 1000 1 1",
            "disk /dev/x rand read 4096 0 1",
            "disk /dev/x rand read 4096 65 1",
            "disk /dev/x sideways read 4096 1 1",
            "disk /dev/x rand erase 4096 1 1",
            "tcp-sink 70000",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn report_is_one_line_of_figures() {
        assert_eq!(
            report("tcp", &[("bytes", 1048576.0), ("secs", 1.25)]),
            "tcp bytes=1048576 secs=1.250"
        );
    }

    #[test]
    fn offsets_stay_on_the_device() {
        let mut rng = 1;
        for i in 0..10_000 {
            assert!(offset(true, &mut rng, i, 0, 1, 17) < 17);
        }
        // Two sequential jobs interleave and wrap.
        let seq: Vec<u64> = (0..3)
            .flat_map(|i| (0..2).map(move |j| (i, j)))
            .map(|(i, j)| offset(false, &mut 0, i, j, 2, 5))
            .collect();
        assert_eq!(seq, [0, 1, 2, 3, 4, 0]);
    }

    #[test]
    fn buffers_are_aligned() {
        let mut v = vec![0u8; 8192 + 4096];
        let b = aligned(&mut v, 8192);
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        assert_eq!(b.len(), 8192);
    }

    #[test]
    fn tcp_and_udp_over_loopback() {
        // Loopback only, on ports the kernel picks.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let sink = std::thread::spawn(move || tcp_sink_on(&l));
        let line = tcp_send(to, 0.2).unwrap();
        assert!(line.starts_with("tcp bytes="), "{line}");
        assert!(sink.join().unwrap().unwrap().starts_with("tcp-sink bytes="));
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = u.local_addr().unwrap();
        let sink = std::thread::spawn(move || udp_sink_on(&u));
        let sent = udp_send(to, 64, 0.2).unwrap();
        let got = sink.join().unwrap().unwrap();
        assert!(sent.starts_with("udp-send packets="), "{sent}");
        assert!(got.contains(" ended=1"), "{got}");
    }

    #[test]
    fn disk_on_a_file() {
        let p = std::env::temp_dir().join(format!("rig-bench-{}", std::process::id()));
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let dev = p.to_str().unwrap();
        // O_DIRECT may be refused by the temp file system (tmpfs before
        // 6.6): then there is nothing to check here.
        match disk(dev, true, true, 4096, 2, 0.1) {
            Ok(line) => {
                assert!(line.starts_with("disk random=1 write=1 bs=4096 jobs=2 ops="));
                let r = disk(dev, false, false, 65536, 1, 0.1).unwrap();
                assert!(r.contains(" bs=65536 "));
            }
            Err(e) => assert!(e.contains("O_DIRECT"), "{e}"),
        }
        std::fs::remove_file(&p).unwrap();
    }
}
