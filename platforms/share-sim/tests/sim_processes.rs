//! The simulation with real processes: the test process runs the broker
//! and the owner domain; member domains are child processes (this test
//! binary re-executed with `XS_SIM_ROLE` set, running only the same test,
//! which then takes its child branch). Children report on stdout lines
//! starting with `CHILD ` and take commands on stdin.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use share_hal::platform::{
    Access, Clock, CopyPtr, CopySeg, CopyStatus, GrantRef, GrantTable, Mapping, Memory, PageBlock,
    PAGE_SIZE,
};
use share_hal::share::{deadline_in, sg_xfer, watch, Attached, Share, ShareRef, XferReport};
use share_hal::Error;
use share_sim::{temp_socket_path, Broker, SimPlatform};

const SECOND: u64 = 1_000_000_000;
const OWNER: u16 = 1;

// ---- child side ---------------------------------------------------------

fn role() -> Option<String> {
    std::env::var("XS_SIM_ROLE").ok()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
}

fn env_u32(name: &str) -> u32 {
    env(name).parse().expect("numeric env")
}

fn say(line: impl AsRef<str>) {
    println!("CHILD {}", line.as_ref());
    std::io::stdout().flush().unwrap();
}

fn hear() -> String {
    let mut l = String::new();
    std::io::stdin().read_line(&mut l).unwrap();
    l.trim().to_string()
}

/// Connects as `XS_DOMID` and attaches to the share `XS_GREF` names.
fn child_attach() -> (SimPlatform, Attached<SimPlatform>) {
    let mut p = SimPlatform::connect(env("XS_SOCK"), env_u32("XS_DOMID") as u16).unwrap();
    let r = ShareRef {
        owner: OWNER,
        descriptor: GrantRef(env_u32("XS_GREF")),
    };
    let a = Attached::attach(&mut p, r).unwrap();
    (p, a)
}

// ---- parent side --------------------------------------------------------

struct Child {
    proc: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    transcript: Vec<String>,
}

impl Child {
    fn spawn(test: &str, envs: &[(&str, String)]) -> Child {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("XS_SIM_ROLE", "child")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut proc = cmd.spawn().unwrap();
        let out = BufReader::new(proc.stdout.take().unwrap());
        Child {
            proc,
            out,
            transcript: Vec::new(),
        }
    }

    /// The next `CHILD` line (without the prefix).
    fn expect(&mut self, prefix: &str) -> String {
        loop {
            let mut l = String::new();
            if self.out.read_line(&mut l).unwrap() == 0 {
                panic!(
                    "child ended before saying {prefix:?}; it said {:?}",
                    self.transcript
                );
            }
            // libtest may print "test name ... " ahead on the same line.
            let Some(rest) = l.trim_end().split_once("CHILD ").map(|(_, r)| r) else {
                self.transcript
                    .push(format!("(other output) {}", l.trim_end()));
                continue;
            };
            {
                println!("  child> {rest}");
                self.transcript.push(rest.to_string());
                assert!(
                    rest.starts_with(prefix),
                    "child said {rest:?}, expected {prefix:?}"
                );
                return rest.to_string();
            }
        }
    }

    fn tell(&mut self, line: &str) {
        let stdin = self.proc.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn wait_success(mut self) {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.out, &mut rest);
        let status = self.proc.wait().unwrap();
        assert!(status.success(), "child failed ({status}):\n{rest}");
    }
}

fn owner_setup(tag: &str) -> (Broker, SimPlatform) {
    let path = temp_socket_path(tag);
    let broker = Broker::spawn(&path).unwrap();
    let p = SimPlatform::connect(&path, OWNER).unwrap();
    (broker, p)
}

fn child_env(broker: &Broker, domid: u16, r: ShareRef) -> Vec<(&'static str, String)> {
    vec![
        ("XS_SOCK", broker.path().display().to_string()),
        ("XS_DOMID", domid.to_string()),
        ("XS_GREF", r.descriptor.0.to_string()),
    ]
}

fn watch_for(p: &mut SimPlatform, secs: u64) -> Vec<share_hal::Port> {
    let mut fired = Vec::new();
    let dl = deadline_in(p, secs * SECOND);
    watch(p, dl, |port| fired.push(port)).expect("trigger within the deadline");
    fired
}

// ---- (a) ------------------------------------------------------------------

#[test]
fn member_process_maps_share_exchanges_data_and_triggers_both_ways() {
    if role().is_some() {
        let (mut p, mut a) = child_attach();
        assert_eq!(a.numpages(), 4);
        let mut hello = [0u8; 16];
        a.mem().read_into(0, &mut hello).unwrap();
        say(format!("read {:?}", std::str::from_utf8(&hello).unwrap()));
        a.mem().write_from(PAGE_SIZE, b"hello from dom 2").unwrap();
        a.trigger(&mut p).unwrap();
        let fired = watch_for(&mut p, 10);
        assert_eq!(fired, vec![a.port().unwrap()]);
        let v = a.mem().read_u64(3 * PAGE_SIZE + 8).unwrap();
        a.mem().write_u64(3 * PAGE_SIZE + 16, v + 1).unwrap();
        say(format!("woken, echoed {}", v + 1));
        a.trigger(&mut p).unwrap();
        a.detach(&mut p).unwrap();
        return;
    }
    let (broker, mut o) = owner_setup("a");
    let mut share = Share::create(&mut o, 4).unwrap();
    share.mem().write_from(0, b"hello from dom 1").unwrap();
    let r = share.add_member(&mut o, 2).unwrap();
    let mut child = Child::spawn(
        "member_process_maps_share_exchanges_data_and_triggers_both_ways",
        &child_env(&broker, 2, r),
    );
    assert_eq!(child.expect("read"), "read \"hello from dom 1\"");
    let fired = watch_for(&mut o, 10);
    assert_eq!(fired, vec![share.port(2).unwrap()]);
    assert_eq!(share.member_for_port(fired[0]), Some(2));
    let mut got = [0u8; 16];
    share.mem().read_into(PAGE_SIZE, &mut got).unwrap();
    assert_eq!(&got, b"hello from dom 2");
    share.mem().write_u64(3 * PAGE_SIZE + 8, 41).unwrap();
    share.trigger(&mut o, 2).unwrap();
    child.expect("woken, echoed 42");
    watch_for(&mut o, 10);
    assert_eq!(share.mem().read_u64(3 * PAGE_SIZE + 16), Ok(42));
    child.wait_success();
    // The member detached: every grant can go.
    share.remove_member(&mut o, 2).unwrap();
    share.destroy(&mut o).unwrap();
}

// ---- (b) ------------------------------------------------------------------

#[test]
fn a_process_never_granted_a_page_cannot_map_or_copy_it() {
    if role().is_some() {
        let mut p = SimPlatform::connect(env("XS_SOCK"), 3).unwrap();
        let page_gref = GrantRef(env_u32("XS_PAGE_GREF"));
        let own = p.alloc_pages(1).unwrap();
        let e = p.map(OWNER, &[page_gref], Access::ReadWrite).err().unwrap();
        say(format!("map refused: {e:?}: {e}"));
        assert_eq!(
            e,
            Error::NoGrant {
                domid: OWNER,
                gref: page_gref
            }
        );
        let e = p.map(OWNER, &[page_gref], Access::ReadOnly).err().unwrap();
        assert!(matches!(e, Error::NoGrant { .. }));
        let mut segs = [CopySeg {
            src: CopyPtr::Foreign {
                domid: OWNER,
                gref: page_gref,
                offset: 0,
            },
            dst: CopyPtr::Local {
                frame: own.frame(0).unwrap(),
                offset: 0,
            },
            len: 64,
            status: CopyStatus::Pending,
        }];
        sg_xfer(&mut p, &mut segs).unwrap();
        say(format!("copy refused: {:?}", segs[0].status));
        assert_eq!(
            segs[0].status,
            CopyStatus::Failed(Error::NoGrant {
                domid: OWNER,
                gref: page_gref
            })
        );
        let mut probe = [0u8; 16];
        own.mem().read_into(0, &mut probe).unwrap();
        assert_eq!(probe, [0u8; 16], "nothing of the owner's page arrived");
        // Attaching with member 2's descriptor is refused the same way.
        let e = Attached::attach(
            &mut p,
            ShareRef {
                owner: OWNER,
                descriptor: GrantRef(env_u32("XS_GREF")),
            },
        )
        .err()
        .unwrap();
        say(format!("attach refused: {e:?}"));
        assert!(matches!(e, Error::NoGrant { .. }));
        return;
    }
    let (broker, mut o) = owner_setup("b");
    let mut share = Share::create(&mut o, 2).unwrap();
    share.mem().write_from(0, b"secret of dom 1!").unwrap();
    // Granted to member 2 only; the child is domain 3.
    let r = share.add_member(&mut o, 2).unwrap();
    // A page grant of member 2 (the first grant after the reserved ones).
    let page_gref = GrantRef(8);
    let mut envs = child_env(&broker, 3, r);
    envs.push(("XS_PAGE_GREF", page_gref.0.to_string()));
    let mut child = Child::spawn(
        "a_process_never_granted_a_page_cannot_map_or_copy_it",
        &envs,
    );
    child.expect("map refused: NoGrant");
    child.expect("copy refused: Failed(NoGrant");
    child.expect("attach refused: NoGrant");
    child.wait_success();
    // ... while member 2 itself can map that very grant.
    let mut m2 = SimPlatform::connect(broker.path(), 2).unwrap();
    let map = m2.map(OWNER, &[page_gref], Access::ReadWrite).unwrap();
    let mut got = [0u8; 16];
    map.mem().read_into(0, &mut got).unwrap();
    assert_eq!(&got, b"secret of dom 1!");
    m2.unmap(map).unwrap();
}

// ---- (c) ------------------------------------------------------------------

#[test]
fn after_remove_member_maps_and_copies_fail_and_revoke_waits_for_unmap() {
    if role().is_some() {
        let (mut p, a) = child_attach();
        let g0 = a.gref(0).unwrap();
        say(format!("attached gref0={}", g0.0));
        assert_eq!(hear(), "unmap");
        a.detach(&mut p).unwrap();
        say("detached");
        assert_eq!(hear(), "retry");
        let e = p.map(OWNER, &[g0], Access::ReadWrite).err().unwrap();
        say(format!("map after revoke: {e:?}"));
        assert_eq!(
            e,
            Error::NoGrant {
                domid: OWNER,
                gref: g0
            }
        );
        let own = p.alloc_pages(1).unwrap();
        let mut segs = [CopySeg {
            src: CopyPtr::Foreign {
                domid: OWNER,
                gref: g0,
                offset: 0,
            },
            dst: CopyPtr::Local {
                frame: own.frame(0).unwrap(),
                offset: 0,
            },
            len: 8,
            status: CopyStatus::Pending,
        }];
        p.copy(&mut segs).unwrap();
        say(format!("copy after revoke: {:?}", segs[0].status));
        assert_eq!(
            segs[0].status,
            CopyStatus::Failed(Error::NoGrant {
                domid: OWNER,
                gref: g0
            })
        );
        let r = ShareRef {
            owner: OWNER,
            descriptor: GrantRef(env_u32("XS_GREF")),
        };
        let e = Attached::attach(&mut p, r).err().unwrap();
        say(format!("attach after revoke: {e:?}"));
        assert!(matches!(e, Error::NoGrant { .. }));
        return;
    }
    let (broker, mut o) = owner_setup("c");
    let mut share = Share::create(&mut o, 3).unwrap();
    let r = share.add_member(&mut o, 2).unwrap();
    let mut child = Child::spawn(
        "after_remove_member_maps_and_copies_fail_and_revoke_waits_for_unmap",
        &child_env(&broker, 2, r),
    );
    child.expect("attached");
    let e = share.remove_member(&mut o, 2).err().unwrap();
    println!("remove_member while mapped: {e:?}: {e}");
    assert!(matches!(e, Error::GrantInUse { .. }));
    assert_eq!(share.revoking().collect::<Vec<_>>(), [2]);
    assert_eq!(share.reap(&mut o), Ok(1), "still mapped: still revoking");
    assert!(matches!(
        share.destroy(&mut o),
        Err(Error::GrantInUse { .. })
    ));
    child.tell("unmap");
    child.expect("detached");
    assert_eq!(share.reap(&mut o), Ok(0));
    child.tell("retry");
    child.expect("map after revoke: NoGrant");
    child.expect("copy after revoke: Failed(NoGrant");
    child.expect("attach after revoke: NoGrant");
    child.wait_success();
    share.destroy(&mut o).unwrap();
}

// ---- (d) ------------------------------------------------------------------

#[test]
fn sg_xfer_copies_between_owner_pages_and_member_grants_one_bad_segment_fails_alone() {
    const BUFS: usize = 4;
    if role().is_some() {
        let (mut p, mut a) = child_attach();
        // The member's own buffers, granted to the owner per transfer.
        let bufs = p.alloc_pages(BUFS).unwrap();
        for i in 0..BUFS {
            bufs.mem()
                .fill(i * PAGE_SIZE, PAGE_SIZE, 0x10 + i as u8)
                .unwrap();
            let g = p
                .grant(bufs.frame(i).unwrap(), OWNER, Access::ReadWrite)
                .unwrap();
            a.mem().write_u32(PAGE_SIZE + 4 * i, g.0).unwrap();
        }
        a.trigger(&mut p).unwrap();
        watch_for(&mut p, 20);
        // The owner wrote page 0 of the share into the second half of each
        // buffer.
        for i in 0..BUFS {
            let mut half = vec![0u8; PAGE_SIZE / 2];
            bufs.mem()
                .read_into(i * PAGE_SIZE + PAGE_SIZE / 2, &mut half)
                .unwrap();
            assert!(half.iter().all(|&b| b == 0xee), "buffer {i} second half");
            assert_eq!(bufs.mem().read_u8(i * PAGE_SIZE), Ok(0x10 + i as u8));
        }
        say("buffers hold the owner's data");
        a.detach(&mut p).unwrap();
        return;
    }
    let (broker, mut o) = owner_setup("d");
    let mut share = Share::create(&mut o, 1 + BUFS).unwrap();
    share.mem().fill(0, PAGE_SIZE, 0xee).unwrap();
    let r = share.add_member(&mut o, 2).unwrap();
    let mut child = Child::spawn(
        "sg_xfer_copies_between_owner_pages_and_member_grants_one_bad_segment_fails_alone",
        &child_env(&broker, 2, r),
    );
    watch_for(&mut o, 20);
    // Peer-written grant refs (in page 1, which the gather overwrites):
    // read each once, into a private copy.
    let mut grefs = [GrantRef(0); BUFS];
    for (i, g) in grefs.iter_mut().enumerate() {
        *g = GrantRef(share.mem().read_u32(PAGE_SIZE + 4 * i).unwrap());
    }
    const SEG: u16 = 256;
    let mut segs = Vec::new();
    for (i, &g) in grefs.iter().enumerate() {
        for k in 0..(PAGE_SIZE as u16 / 2 / SEG) {
            // Gather: the member's first half into share page 1 + i.
            segs.push(CopySeg {
                src: CopyPtr::Foreign {
                    domid: 2,
                    gref: g,
                    offset: k * SEG,
                },
                dst: share.local(1 + i, k * SEG).unwrap(),
                len: SEG,
                status: CopyStatus::Pending,
            });
            // Scatter: share page 0 into the member's second half.
            segs.push(CopySeg {
                src: share.local(0, k * SEG).unwrap(),
                dst: CopyPtr::Foreign {
                    domid: 2,
                    gref: g,
                    offset: PAGE_SIZE as u16 / 2 + k * SEG,
                },
                len: SEG,
                status: CopyStatus::Pending,
            });
        }
    }
    // Enough segments for several batches.
    while segs.len() < 300 {
        let s = segs[segs.len() % 8].clone();
        segs.push(s);
    }
    let bad = 77;
    segs.insert(
        bad,
        CopySeg {
            src: CopyPtr::Foreign {
                domid: 2,
                gref: GrantRef(4000),
                offset: 0,
            },
            dst: share.local(1, 0).unwrap(),
            len: 16,
            status: CopyStatus::Pending,
        },
    );
    let t = Instant::now();
    let report = sg_xfer(&mut o, &mut segs).unwrap();
    println!(
        "sg_xfer: {} segments of {SEG} B in {:?}: {report:?}; bad one: {:?}",
        segs.len(),
        t.elapsed(),
        segs[bad].status
    );
    assert_eq!(
        report,
        XferReport {
            done: segs.len() - 1,
            failed: 1
        }
    );
    assert_eq!(
        segs[bad].status,
        CopyStatus::Failed(Error::NoGrant {
            domid: 2,
            gref: GrantRef(4000)
        })
    );
    for i in 0..BUFS {
        let mut half = vec![0u8; PAGE_SIZE / 2];
        share
            .mem()
            .read_into((1 + i) * PAGE_SIZE, &mut half)
            .unwrap();
        assert!(half.iter().all(|&b| b == 0x10 + i as u8), "page {}", 1 + i);
    }
    share.trigger(&mut o, 2).unwrap();
    child.expect("buffers hold the owner's data");
    child.wait_success();
}

// ---- (e) ------------------------------------------------------------------

fn cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as u64 * SECOND + t.tv_nsec as u64
}

#[test]
fn watch_with_a_deadline_times_out_without_spinning_and_a_trigger_wakes_it() {
    if role().is_some() {
        let (mut p, a) = child_attach();
        let (t0, c0) = (p.now_ns(), cpu_ns());
        let r = watch(&mut p, Some(t0 + 300_000_000), |_| {});
        let (waited, cpu) = (p.now_ns() - t0, cpu_ns() - c0);
        say(format!(
            "timeout {:?} after {} ms, cpu {} us",
            r,
            waited / 1_000_000,
            cpu / 1000
        ));
        assert_eq!(r, Err(Error::TimedOut));
        assert!((300_000_000..3 * SECOND).contains(&waited));
        assert!(cpu < 30_000_000, "a sleeping wait burns no CPU");
        // Start the clock before saying so: the owner triggers 200 ms after
        // it hears us.
        let (t0, c0) = (p.now_ns(), cpu_ns());
        say("ready");
        let mut fired = Vec::new();
        watch(&mut p, Some(t0 + 20 * SECOND), |port| fired.push(port)).unwrap();
        let (waited, cpu) = (p.now_ns() - t0, cpu_ns() - c0);
        assert_eq!(fired, vec![a.port().unwrap()]);
        say(format!(
            "woken after {} ms, cpu {} us",
            waited / 1_000_000,
            cpu / 1000
        ));
        assert!(
            waited < 10 * SECOND,
            "woken by the trigger, not the deadline"
        );
        assert!(cpu < 30_000_000);
        a.detach(&mut p).unwrap();
        return;
    }
    let (broker, mut o) = owner_setup("e");
    let mut share = Share::create(&mut o, 1).unwrap();
    let r = share.add_member(&mut o, 2).unwrap();
    let mut child = Child::spawn(
        "watch_with_a_deadline_times_out_without_spinning_and_a_trigger_wakes_it",
        &child_env(&broker, 2, r),
    );
    child.expect("timeout Err(TimedOut)");
    child.expect("ready");
    std::thread::sleep(Duration::from_millis(200));
    share.trigger(&mut o, 2).unwrap();
    let woke = child.expect("woken after");
    let ms: u64 = woke
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(ms >= 150, "the member slept until the trigger ({ms} ms)");
    child.wait_success();
}

// ---- (f) ------------------------------------------------------------------

#[test]
fn a_crashing_member_does_not_take_down_the_broker_or_the_owner() {
    if role().is_some() {
        let (mut p, mut a) = child_attach();
        a.mem().write_u32(0, 0xdead).unwrap();
        a.trigger(&mut p).unwrap();
        say("attached, crashing now");
        std::process::abort();
    }
    let (broker, mut o) = owner_setup("f");
    let mut share = Share::create(&mut o, 2).unwrap();
    let r = share.add_member(&mut o, 2).unwrap();
    let mut child = Child::spawn(
        "a_crashing_member_does_not_take_down_the_broker_or_the_owner",
        &child_env(&broker, 2, r),
    );
    child.expect("attached, crashing now");
    let status = child.proc.wait().unwrap();
    println!("member exited with {status}");
    assert!(!status.success());
    watch_for(&mut o, 10);
    assert_eq!(share.mem().read_u32(0), Ok(0xdead));

    // The broker saw the process die: its mappings are gone, so the owner
    // can revoke (the broker may take a moment to notice the hang-up).
    let _ = share.remove_member(&mut o, 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while share.reap(&mut o).unwrap() > 0 {
        assert!(
            Instant::now() < deadline,
            "grants of a dead member stay in use"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    // A hostile client sending garbage is dropped, nothing else.
    {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
        let s = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).unwrap();
        rustix::net::connect(&s, &SocketAddrUnix::new(broker.path()).unwrap()).unwrap();
        rustix::net::send(&s, &[0xff; 64], rustix::net::SendFlags::empty()).unwrap();
        let mut b = [0u8; 16];
        let n = rustix::net::recv(&s, &mut b, rustix::net::RecvFlags::empty())
            .unwrap()
            .0;
        assert_eq!(n, 0, "the broker hangs up on garbage");
    }

    // Owner and broker carry on: the same domain id comes back and joins.
    let r = share.add_member(&mut o, 2).unwrap();
    let mut m = SimPlatform::connect(broker.path(), 2).unwrap();
    let mut a = Attached::attach(&mut m, r).unwrap();
    a.trigger(&mut m).unwrap();
    watch_for(&mut o, 10);
    assert_eq!(a.mem().read_u32(0), Ok(0xdead));
    assert_eq!(broker.domains(), vec![1, 2]);
    a.detach(&mut m).unwrap();
    share.destroy(&mut o).unwrap();
}
