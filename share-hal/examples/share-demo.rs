//! `cargo xtask demo`: the share transport between real processes on the
//! host simulation.
//!
//! The parent process runs the simulation broker (the stand-in for Xen) and
//! starts each domain as a child process of this same binary:
//! - domain 1 owns a share (like netback-uk will) and echoes every frame a
//!   member sends on its tx lane back on its rx lane;
//! - domain 2 joins the share by its share_ref and sends frames of 64 and
//!   1500 bytes, checking every echo;
//! - domain 4 was never granted the share and tries to map it;
//! - domain 2 is removed from the share and tries to join again.
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use share_hal::frames::{FrameMeta, FrameReceiver, FrameSender};
use share_hal::lane::{self, Consumer, LaneLayout, Producer};
use share_hal::platform::{Clock, DomId, EventChannels, GrantRef};
use share_hal::share::{Attached, Share, ShareRef};
use share_hal::wire::net::NetLayout;
use share_hal::{Error, SharedMem};
use share_sim::{temp_socket_path, Broker, SimPlatform};

/// A network share (docs/protocol.md, "net share"): page 0 for control,
/// then a tx lane and an rx lane of 2 KiB slots, 64 slots each.
const SHARE_PAGES: usize = 66;
const MAX_FRAME: usize = 9018;

/// The tx and rx lane windows of a net share, and their shape.
fn lanes(mem: SharedMem<'_>) -> Result<(SharedMem<'_>, SharedMem<'_>, LaneLayout), Error> {
    let net = NetLayout::new(SHARE_PAGES as u32)?;
    Ok((net.tx.window(mem)?, net.rx.window(mem)?, net.tx.lane()?))
}

fn say(who: &str, line: &str) {
    println!("[{who}] {line}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        None => orchestrate(),
        Some("owner") => owner(&args[2]),
        Some("member") => member(&args[2], parse_ref(&args[3..])),
        _ => Err("usage: share-demo [owner SOCKET | member SOCKET DOMID OWNER GREF]".into()),
    };
    if let Err(e) = r {
        eprintln!("share-demo: {e}");
        std::process::exit(1);
    }
}

fn parse_ref(a: &[String]) -> (DomId, ShareRef) {
    let n = |i: usize| a.get(i).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
    (
        n(0) as DomId,
        ShareRef {
            owner: n(1) as DomId,
            descriptor: GrantRef(n(2)),
        },
    )
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Domain {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

fn start(args: &[String]) -> Res<Domain> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let stdout: ChildStdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            let _ = tx.send(line);
        }
    });
    Ok(Domain {
        child,
        stdin,
        lines,
    })
}

/// Waits for a line of a child that starts with `prefix`.
fn expect(d: &Domain, prefix: &str) -> Res<String> {
    loop {
        let line = d.lines.recv_timeout(std::time::Duration::from_secs(60))?;
        if let Some(rest) = line.split_once(prefix).map(|(_, r)| r.trim().to_string()) {
            return Ok(rest);
        }
    }
}

fn orchestrate() -> Res<()> {
    println!("xen-share demo: the share transport between processes on the HOST SIMULATION.");
    println!("(The same share code runs on Xen over grant tables and event channels; the");
    println!(" Xen parts are tested by `cargo xtask test --tier xen`.)\n");
    let sock = temp_socket_path("demo");
    let _broker = Broker::spawn(&sock)?;
    let sock = sock.to_string_lossy().to_string();
    say(
        "sim",
        &format!("broker (the simulated hypervisor) listening on {sock}"),
    );

    let mut owner = start(&["owner".into(), sock.clone()])?;
    let r = expect(&owner, "SHARE_REF")?;
    let (owner_dom, gref) = r.split_once(' ').ok_or("bad SHARE_REF line")?;

    // A member domain's run: whether it joined (and echoed) successfully.
    let member = |domid: &str| -> Res<bool> {
        let args = ["member", &sock, domid, owner_dom, gref].map(String::from);
        let d = start(&args)?;
        let mut child = d.child;
        Ok(child.wait()?.success())
    };
    if !member("2")? {
        return Err("member domain 2 failed".into());
    }

    say(
        "sim",
        "domain 4 was never granted the share; it tries to join with the same share_ref",
    );
    if member("4")? {
        return Err("domain 4 joined a share it was never granted".into());
    }
    say("sim", "domain 4 was refused, as it must be");

    writeln!(owner.stdin, "remove 2")?;
    expect(&owner, "REMOVED")?;
    say(
        "sim",
        "domain 2 was removed; it tries to join again with its old share_ref",
    );
    if member("2")? {
        return Err("domain 2 joined again after its grants were revoked".into());
    }
    say("sim", "domain 2 was refused: its grants are gone");
    writeln!(owner.stdin, "quit")?;
    owner.child.wait()?;
    println!(
        "\ndemo complete. Throughput figures next to a memcpy baseline: cargo xtask bench ring"
    );
    Ok(())
}

fn owner(sock: &str) -> Res<()> {
    let who = "dom1 owner";
    let mut p = SimPlatform::connect(sock, 1)?;
    let mut share = Share::create(&mut p, SHARE_PAGES)?;
    {
        let (tx, rx, layout) = lanes(share.mem())?;
        lane::init(tx, layout, 0)?;
        lane::init(rx, layout, 0)?;
    }
    let r = share.add_member(&mut p, 2)?;
    say(
        who,
        &format!("created a share of {SHARE_PAGES} pages, granted to domain 2"),
    );
    println!("SHARE_REF {} {}", r.owner, r.descriptor.0);
    let port = share.port(2)?;

    let (cmd_tx, cmds) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines().map_while(Result::ok) {
            let _ = cmd_tx.send(l);
        }
    });
    let mut echoed = 0u64;
    let mut buf = Vec::new();
    let mut pending: Option<Vec<u8>> = None;
    loop {
        {
            let (tx, rx, layout) = lanes(share.mem())?;
            let mut from = FrameReceiver::new(Consumer::attach(tx, layout)?, MAX_FRAME)?;
            let mut to = FrameSender::new(Producer::attach(rx, layout)?, MAX_FRAME)?;
            // Echo until the member goes quiet for a moment.
            loop {
                let mut moved = 0;
                // A frame taken off tx while rx was full goes out first.
                if let Some(f) = pending.take() {
                    if to.send(&f, FrameMeta::default())? {
                        moved += 1;
                    } else {
                        pending = Some(f);
                    }
                }
                if pending.is_none() && from.poll()? > 0 {
                    loop {
                        let frame = match from.next() {
                            Ok(Some(f)) => f,
                            Ok(None) => break,
                            Err(e) => {
                                say(who, &format!("dropped a bad frame: {e}"));
                                continue;
                            }
                        };
                        buf.clear();
                        buf.extend_from_slice(frame.data);
                        if !to.send(&buf, FrameMeta::default())? {
                            // rx full: keep the frame, stop reading; the
                            // member drains rx and triggers us.
                            pending = Some(std::mem::take(&mut buf));
                            break;
                        }
                        moved += 1;
                    }
                }
                let t1 = to.publish()?;
                let t2 = from.release()?;
                if t1 || t2 {
                    p.notify(port)?;
                }
                echoed += moved;
                let idle = match &pending {
                    // Arm "trigger me when rx has room", then re-check.
                    Some(f) => !to.prepare_wait(f.len())?,
                    None => from.prepare_wait()? == 0,
                };
                if moved == 0 && idle {
                    let dl = p.now_ns() + 50_000_000;
                    match p.wait(Some(dl), &mut |_| {}) {
                        Err(Error::TimedOut) => break,
                        r => r?,
                    }
                }
            }
        }
        match cmds.try_recv().as_deref() {
            Ok("remove 2") => {
                share.remove_member(&mut p, 2)?;
                say(
                    who,
                    &format!(
                        "echoed {echoed} frames; removed domain 2 (grants revoked, port closed)"
                    ),
                );
                println!("REMOVED 2");
            }
            Ok("quit") | Err(mpsc::TryRecvError::Disconnected) => break,
            _ => {}
        }
    }
    share.destroy(&mut p)?;
    say(who, "share destroyed");
    Ok(())
}

fn member(sock: &str, (domid, r): (DomId, ShareRef)) -> Res<()> {
    let who = format!("dom{domid} member");
    let mut p = SimPlatform::connect(sock, domid)?;
    let att = match Attached::attach(&mut p, r) {
        Ok(a) => a,
        Err(e) => {
            say(
                &who,
                &format!("cannot join share_ref {}:{}: {e}", r.owner, r.descriptor.0),
            );
            return Err(e.into());
        }
    };
    let port = att.port().ok_or("share has no event port")?;
    say(
        &who,
        &format!(
            "joined the share of domain {} ({} pages)",
            att.owner(),
            att.numpages()
        ),
    );
    let (tx, rx, layout) = lanes(att.mem())?;
    let mut to = FrameSender::new(Producer::attach(tx, layout)?, MAX_FRAME)?;
    let mut from = FrameReceiver::new(Consumer::attach(rx, layout)?, MAX_FRAME)?;
    for (size, count) in [(64usize, 200_000u64), (1500, 100_000), (9000, 20_000)] {
        let start = Instant::now();
        let (mut sent, mut got) = (0u64, 0u64);
        let mut frame = vec![0u8; size];
        while got < count {
            while sent < count {
                frame[..8].copy_from_slice(&sent.to_le_bytes());
                if !to.send(&frame, FrameMeta::default())? {
                    break;
                }
                sent += 1;
            }
            if to.publish()? {
                p.notify(port)?;
            }
            let mut n = 0;
            if from.poll()? > 0 {
                while let Some(f) = from.next()? {
                    let seq = u64::from_le_bytes(f.data[..8].try_into()?);
                    if seq != got || f.data.len() != size {
                        return Err(format!(
                            "echo {got} came back as {seq} ({} bytes)",
                            f.data.len()
                        )
                        .into());
                    }
                    got += 1;
                    n += 1;
                }
            }
            if from.release()? {
                p.notify(port)?;
            }
            if n == 0 && got < count && from.prepare_wait()? == 0 {
                p.wait(Some(p.now_ns() + 2_000_000_000), &mut |_| {})?;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        say(
            &who,
            &format!(
                "{count} frames of {size} B echoed in order: {:.2} M frames/s round trip, {:.2} GB/s each way",
                count as f64 / secs / 1e6,
                (count * size as u64) as f64 / secs / 1e9
            ),
        );
    }
    att.detach(&mut p)?;
    say(&who, "left the share");
    Ok(())
}
