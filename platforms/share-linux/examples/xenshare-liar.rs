//! Test-only (feature `hostile`, issue 18): the owner a `/dev/xenshare`
//! user talks to, lying. It stands where `xenshare-xfer owner` stands (a
//! process in another domU, over `/dev/xenshare`), in the same layout, and
//! lies as `--mode` says; the member is the ordinary `xenshare-xfer
//! member` (attached through MAP, or with `--join` through the kernel's
//! JOIN), which must end with a clean error while its domain stays sound.
//! The rig's `hostile-xenshare` scenario runs it; never shipped (`cargo
//! xtask dist` ships no example, and refuses any file carrying
//! [`MARKER`]).
//!
//! ```text
//! xenshare-liar --domid D --peer M --mode MODE [--flood SECS] [--stop FILE]
//! ```
//!
//! It prints `SHARE_REF D R` like the honest owner, lies, then holds
//! everything until FILE exists (default /tmp/xenshare-liar.stop), and
//! revokes every grant it made: one the member still maps after 10 s
//! fails the run (`grant R is still mapped by domain M`).
//!
//! Modes, in the share descriptor (the member's attach or JOIN fails):
//! - `numpages-huge`: `numpages` one above the most a descriptor holds;
//! - `numpages-short`: 65 where the member expects 66 pages;
//! - `member`: the descriptor names another member;
//! - `refs-bogus`: half the page refs name no grant at all;
//! - `refs-foreign`: half the page refs are grants made to dom0 (the
//!   owner's console and xenstore pages);
//! - `refs-readonly`: every page is granted read-only (a share is mapped
//!   read-write);
//! - `share-ref`: the SHARE_REF printed names no grant;
//! - `desc-zero`: the descriptor page is all zeroes;
//! - `port`: the port named is one allocated for dom0, not the member;
//!
//! and once the member is attached (the descriptor is honest):
//! - `lane-prod`: the owner-to-member lane's `prod` runs past its slots;
//! - `msg-len`: a data message claims 65535 bytes in a 2 KiB slot;
//! - `bulk-len`: a bulk chunk claims one byte more than its region;
//! - `flood`: nothing but triggers, as fast as it can, for SECS seconds
//!   (default 6), then silence;
//! - `silent`: nothing at all.
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use share_hal::lane::{self, Producer};
use share_hal::platform::{
    Access, DomId, EventChannels, GrantRef, GrantTable, Memory, PageBlock, Port, PAGE_SIZE,
};
use share_hal::wire::descriptor::{self, Descriptor};
use share_hal::Error;
use share_linux::xenshare::XenShareDev;

#[path = "common/xfer.rs"]
#[allow(dead_code)]
mod xfer;
use xfer::*;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Printed at start and so in the binary: what `dist` refuses.
pub const MARKER: &str = "xenshare-liar HOSTILE TEST BUILD";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    NumpagesHuge,
    NumpagesShort,
    Member,
    RefsBogus,
    RefsForeign,
    RefsReadonly,
    ShareRef,
    DescZero,
    Port,
    LaneProd,
    MsgLen,
    BulkLen,
    Flood,
    Silent,
}

const MODES: [(&str, Mode); 14] = [
    ("numpages-huge", Mode::NumpagesHuge),
    ("numpages-short", Mode::NumpagesShort),
    ("member", Mode::Member),
    ("refs-bogus", Mode::RefsBogus),
    ("refs-foreign", Mode::RefsForeign),
    ("refs-readonly", Mode::RefsReadonly),
    ("share-ref", Mode::ShareRef),
    ("desc-zero", Mode::DescZero),
    ("port", Mode::Port),
    ("lane-prod", Mode::LaneProd),
    ("msg-len", Mode::MsgLen),
    ("bulk-len", Mode::BulkLen),
    ("flood", Mode::Flood),
    ("silent", Mode::Silent),
];

/// A grant ref beyond any grant table a domain has here (v1 tables of
/// at most 64 frames: 32 768 refs).
const NO_GRANT: u32 = 0x00ff_0000;

struct Args {
    domid: DomId,
    peer: DomId,
    mode: Mode,
    flood: Duration,
    stop: PathBuf,
}

const USAGE: &str =
    "usage: xenshare-liar --domid D --peer M --mode MODE [--flood SECS] [--stop FILE]";

fn parse(args: &[String]) -> Res<Args> {
    let (mut domid, mut peer, mut mode) = (None, None, None);
    let mut flood = Duration::from_secs(6);
    let mut stop = PathBuf::from("/tmp/xenshare-liar.stop");
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--domid" => domid = Some(v.parse()?),
            "--peer" => peer = Some(v.parse()?),
            "--mode" => {
                let m = MODES.iter().find(|(n, _)| n == v);
                mode = Some(m.ok_or(format!("no mode {v}"))?.1);
            }
            "--flood" => flood = Duration::from_secs(v.parse()?),
            "--stop" => stop = PathBuf::from(v),
            f => return Err(format!("unknown option {f}\n{USAGE}").into()),
        }
    }
    match (domid, peer, mode) {
        (Some(domid), Some(peer), Some(mode)) => Ok(Args {
            domid,
            peer,
            mode,
            flood,
            stop,
        }),
        _ => Err(USAGE.into()),
    }
}

/// The descriptor the honest owner would write, then the mode's lie.
fn descriptor(a: &Args, port: Port, grefs: &[GrantRef]) -> Vec<u8> {
    let mut buf = vec![0u8; PAGE_SIZE];
    if a.mode == Mode::DescZero {
        return buf;
    }
    let mut d = Descriptor::new_unchecked(&mut buf[..]);
    d.set_magic(descriptor::MAGIC);
    d.set_version(descriptor::VERSION);
    d.set_flags(0);
    d.set_owner(a.domid);
    d.set_member(a.peer);
    d.set_numpages(grefs.len() as u32);
    d.set_port(port);
    for (i, &g) in grefs.iter().enumerate() {
        d.set_gref(i as u32, g);
    }
    let half = grefs.len() as u32 / 2;
    match a.mode {
        Mode::NumpagesHuge => d.set_numpages(descriptor::MAX_PAGES + 1),
        Mode::NumpagesShort => d.set_numpages(grefs.len() as u32 - 1),
        Mode::Member => d.set_member(a.peer.wrapping_add(100)),
        Mode::RefsBogus => {
            for i in half..grefs.len() as u32 {
                d.set_gref(i, GrantRef(NO_GRANT + i));
            }
        }
        // Refs 0 and 1: the console and xenstore pages, granted to dom0.
        Mode::RefsForeign => {
            for i in half..grefs.len() as u32 {
                d.set_gref(i, GrantRef(i % 2));
            }
        }
        _ => {}
    }
    buf
}

/// What the mode does once the share is offered.
fn lie(a: &Args, p: &mut XenShareDev, pages: &impl PageBlock, port: Port) -> Res<()> {
    let layout = lane_layout()?;
    let o2m = lane_window(pages.mem(), O2M_LANE)?;
    let push = |m: Vec<u8>| -> Res<()> {
        let mut to = Producer::attach(o2m, layout)?;
        if !to.push(&m)? {
            return Err("the lane is full".into());
        }
        to.publish()?;
        Ok(())
    };
    match a.mode {
        Mode::LaneProd => {
            let bogus = layout.slot_count() + 7;
            o2m.store_u32(lane::header::PROD, bogus, Ordering::Release)?;
            println!(
                "liar: o2m prod {bogus} (the lane has {} slots)",
                layout.slot_count()
            );
        }
        Mode::MsgLen => {
            push(msg(DATA, 0, &[0x5a; 64], 0xffff))?;
            println!("liar: a data message claiming 65535 bytes");
        }
        Mode::BulkLen => {
            push(msg(BULK, 0, &[], BULK_BYTES as u32 + 1))?;
            println!("liar: a bulk chunk claiming {} bytes", BULK_BYTES + 1);
        }
        Mode::Flood => {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < a.flood {
                p.notify(port)?;
                n += 1;
            }
            println!(
                "liar: flood: {n} triggers in {:.1} s",
                a.flood.as_secs_f64()
            );
            return Ok(());
        }
        _ => return Ok(()),
    }
    p.notify(port)?;
    Ok(())
}

/// Revokes every grant; one the member still maps gets 10 s to go.
fn revoke_all(p: &mut XenShareDev, peer: DomId, grants: &[GrantRef]) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for &g in grants {
        loop {
            match p.revoke(g) {
                Ok(()) => break,
                Err(Error::GrantInUse { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(Error::GrantInUse { .. }) => {
                    return Err(format!("grant {} is still mapped by domain {peer}", g.0).into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn run(a: Args) -> Res<()> {
    println!("{MARKER}");
    let mut p = XenShareDev::open(a.domid)?;
    let pages = p.alloc_pages(SHARE_PAGES)?;
    let desc = p.alloc_pages(1)?;
    let layout = lane_layout()?;
    lane::init(lane_window(pages.mem(), O2M_LANE)?, layout, 0)?;
    lane::init(lane_window(pages.mem(), M2O_LANE)?, layout, 0)?;
    // `port`: a port dom0 may bind, which the member cannot.
    let port = p.alloc_unbound(if a.mode == Mode::Port { 0 } else { a.peer })?;
    let access = if a.mode == Mode::RefsReadonly {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let mut grants = Vec::with_capacity(SHARE_PAGES + 1);
    for i in 0..SHARE_PAGES {
        grants.push(p.grant(pages.frame(i).ok_or("no frame")?, a.peer, access)?);
    }
    desc.mem().write_from(0, &descriptor(&a, port, &grants))?;
    let desc_ref = p.grant(desc.frame(0).ok_or("no frame")?, a.peer, Access::ReadOnly)?;
    grants.push(desc_ref);
    let shown = if a.mode == Mode::ShareRef {
        GrantRef(NO_GRANT)
    } else {
        desc_ref
    };
    let name = MODES
        .iter()
        .find(|(_, m)| *m == a.mode)
        .map_or("?", |(n, _)| n);
    println!(
        "liar: share of {SHARE_PAGES} pages for domain {}, lying: {name}",
        a.peer
    );
    println!("SHARE_REF {} {}", a.domid, shown.0);
    lie(&a, &mut p, &pages, port)?;
    let start = Instant::now();
    while !a.stop.exists() {
        if start.elapsed() > Duration::from_secs(300) {
            return Err(format!("{} never came", a.stop.display()).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    revoke_all(&mut p, a.peer, &grants)?;
    p.close(port)?;
    println!("liar: every grant revoked");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = parse(&args).and_then(run) {
        eprintln!("xenshare-liar: {e}");
        std::process::exit(1);
    }
}
