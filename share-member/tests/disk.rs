//! `share-member` serves a disk on the host simulation: `blkback-file`
//! (domain 1) serves an image file, the test plays dom0 (an owner entry in
//! the server's vdevice page, a member entry in domain 3's), and
//! `share-member` as domain 3 puts a block device on it. Real tools then
//! use the device: `mkfs.ext4`, `mount`, files written and synced,
//! `e2fsck -f` clean, checksums after a remount; the server is killed with
//! kill -9 while a file is being written, restarted, dom0 points the entry
//! at the new share, and the write completes with nothing lost; removing
//! the entry removes the device.
//!
//! Needs root, `/dev/fuse`, `/dev/loop-control` and e2fsprogs (`cargo
//! xtask test` installs them); otherwise it says why and passes without
//! running. `blkback-file` is the one `cargo test --workspace` builds next
//! to this test.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use share_hal::platform::{Clock, DomId};
use share_hal::vdevice::VdeviceClient;
use share_hal::wire::blk::features;
use share_hal::wire::vdevice::{flags, status, Bootstrap, EntryRepr, Kind, Role, BOOTSTRAP_KEY};
use share_hal::GrantRef;
use share_sim::{temp_socket_path, Broker, SimMapping, SimPlatform, SimStore};

const SERVER: DomId = 1;
const MEMBER: DomId = 3;
const NUMPAGES: u32 = 11;
const SECOND: u64 = 1_000_000_000;
const IMAGE_BYTES: u64 = 128 << 20;

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (FUSE mounts and loop devices need it)".into());
    }
    for dev in ["/dev/fuse", "/dev/loop-control"] {
        if !Path::new(dev).exists() {
            return Some(format!("{dev} is missing (kernel module not loaded)"));
        }
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("\tfuse")) {
        return Some("the kernel has no fuse file system".into());
    }
    if !fs.lines().any(|l| l.trim_end().ends_with("ext4")) {
        return Some("the kernel has no ext4".into());
    }
    for tool in ["mkfs.ext4", "e2fsck", "mount", "umount"] {
        if !have(tool) {
            return Some(format!("{tool} is missing (e2fsprogs / mount)"));
        }
    }
    None
}

/// `blkback-file`, built by `cargo test --workspace` next to this test.
fn blkback_file() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("blkback-file");
    assert!(
        bin.exists(),
        "{} is missing: run the workspace's tests (cargo test --workspace, as cargo xtask test does) \
         or build it first: cargo build -p blkback-uk --features host --bin blkback-file",
        bin.display()
    );
    bin
}

/// Runs a command to its end within `secs`, or kills it and fails.
fn run(what: &str, cmd: &mut Command, secs: u64) -> bool {
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.success();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn must(what: &str, cmd: &mut Command, secs: u64) {
    assert!(run(what, cmd, secs), "{what} failed");
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Everything the test started, undone on the way out, pass or fail:
/// unmount first (the member must still serve for that), then the member
/// (its exit aborts its FUSE connection, so nothing below can hang), the
/// server, the files.
struct Rig {
    sock: PathBuf,
    dir: PathBuf,
    image: PathBuf,
    /// Served read-only as disk 1.
    ro_image: PathBuf,
    mnt: PathBuf,
    mounted: bool,
    server: Option<Child>,
    member: Option<Child>,
}

impl Rig {
    fn spawn_server(&mut self) {
        SimStore::for_broker(&self.sock)
            .remove(SERVER, BOOTSTRAP_KEY)
            .unwrap();
        let child = Command::new(blkback_file())
            .arg("--sim")
            .arg(&self.sock)
            .args(["--domid", &SERVER.to_string(), "--disk"])
            .arg(&self.image)
            .arg("--disk")
            .arg(format!("ro:{}", self.ro_image.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.server = Some(child);
    }

    /// Stops the server (requests pile up unanswered), waits until the
    /// writer is stuck on them, then kill -9: requests are in flight when
    /// it dies, whatever the timing.
    fn kill9_server_with_requests_in_flight(&mut self, progress: &AtomicU64) {
        let mut c = self.server.take().unwrap();
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGSTOP) };
        let mut last = progress.load(Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = progress.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            assert!(
                Instant::now() < until,
                "the writer never waited for the stopped server"
            );
            last = now;
        }
        c.kill().unwrap();
        c.wait().unwrap();
    }

    fn mount(&mut self, dev: &Path) {
        must(
            "mount",
            Command::new("mount")
                .args(["-t", "ext4", "-o", "nodiscard"])
                .arg(dev)
                .arg(&self.mnt),
            60,
        );
        self.mounted = true;
    }

    fn umount(&mut self) {
        must("umount", Command::new("umount").arg(&self.mnt), 120);
        self.mounted = false;
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(mut m) = self.member.take() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(m.id() as i32, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until && m.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = m.kill();
            let _ = m.wait();
        }
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_file(&self.ro_image);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(SimStore::for_broker(&self.sock).dir());
    }
}

fn bootstrap(sock: &Path, domid: DomId) -> Bootstrap {
    let store = SimStore::for_broker(sock);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = store.read(domid, BOOTSTRAP_KEY).unwrap() {
            if let Ok(b) = Bootstrap::parse(v.as_bytes()) {
                return b;
            }
        }
        assert!(
            Instant::now() < until,
            "domain {domid} never published its vdevice page"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn change(
    p: &mut SimPlatform,
    vd: &mut VdeviceClient<SimMapping>,
    index: u32,
    e: EntryRepr,
) -> EntryRepr {
    let dl = p.now_ns() + 20 * SECOND;
    vd.change(p, index, &e, dl).unwrap()
}

/// dom0's connection to the (current) server's vdevice page.
fn server_page(p: &mut SimPlatform, sock: &Path) -> VdeviceClient<SimMapping> {
    let boot = bootstrap(sock, SERVER);
    VdeviceClient::attach(p, SERVER, boot).unwrap()
}

/// dom0 serves disk `disk` of the server to the member: the owner entry
/// in the server's page; returns its share_ref.
fn serve(
    p: &mut SimPlatform,
    vd: &mut VdeviceClient<SimMapping>,
    disk: u64,
    read_only: bool,
) -> GrantRef {
    let e = change(
        p,
        vd,
        disk as u32,
        EntryRepr {
            kind: Kind::Disk,
            role: Role::Owner,
            flags: if read_only { flags::READ_ONLY } else { 0 },
            subtype: features::ALL,
            numpages: NUMPAGES,
            peer: MEMBER,
            share_ref: GrantRef(0),
            status: 0,
            param: disk,
        },
    );
    assert_eq!(e.status, status::OK, "the server refused the owner entry");
    e.share_ref
}

fn member_entry(share_ref: GrantRef, read_only: bool) -> EntryRepr {
    EntryRepr {
        kind: Kind::Disk,
        role: Role::Member,
        flags: if read_only { flags::READ_ONLY } else { 0 },
        subtype: 0,
        numpages: NUMPAGES,
        peer: SERVER,
        share_ref,
        status: 0,
        param: 0,
    }
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn files() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = (0..24u64)
        .map(|i| {
            let len = [512usize, 4096, 10_000, 65_536, 300_001, 1 << 20][i as usize % 6];
            (format!("f{i}"), pattern(i + 1, len))
        })
        .collect();
    v.push(("big".into(), pattern(99, 12 << 20)));
    v
}

fn check_files(mnt: &Path, expect: &[(String, u64)]) {
    for (name, sum) in expect {
        let mut data = Vec::new();
        std::fs::File::open(mnt.join(name))
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(fnv(&data), *sum, "{name} differs after the remount");
    }
}

#[test]
fn ext4_on_a_disk_served_through_the_member_survives_a_server_kill() {
    if let Some(why) = skip_reason() {
        eprintln!("skipped: {why}");
        return;
    }
    let sock = temp_socket_path("member-disk");
    let _broker = Broker::spawn(&sock).unwrap();
    let dir = std::env::temp_dir().join(format!("member-disk-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    let image = dir.with_extension("img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(IMAGE_BYTES)
        .unwrap();
    let ro_image = dir.with_extension("ro.img");
    let ro_data = pattern(1234, 2 << 20);
    std::fs::write(&ro_image, &ro_data).unwrap();
    let mut rig = Rig {
        ro_image,
        sock: sock.clone(),
        mnt: dir.join("mnt"),
        dir: dir.clone(),
        image: image.clone(),
        mounted: false,
        server: None,
        member: None,
    };
    rig.spawn_server();
    let mut dom0 = SimPlatform::connect(&sock, 0).unwrap();
    let mut server_vd = server_page(&mut dom0, &sock);
    let share_ref = serve(&mut dom0, &mut server_vd, 0, false);

    let run_dir = dir.join("run");
    rig.member = Some(
        Command::new(env!("CARGO_BIN_EXE_share-member"))
            .arg("--sim")
            .arg(&sock)
            .args(["--domid", &MEMBER.to_string(), "--run-dir"])
            .arg(&run_dir)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The member's log, passed on and kept to check what it says.
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let err = rig.member.as_mut().unwrap().stderr.take().unwrap();
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                log.lock().unwrap().push(line);
            }
        });
    }
    let boot = bootstrap(&sock, MEMBER);
    let mut vd = VdeviceClient::attach(&mut dom0, MEMBER, boot).unwrap();
    let e = change(&mut dom0, &mut vd, 0, member_entry(share_ref, false));
    assert_eq!(e.status, status::OK, "the member refused the disk entry");
    let link = run_dir.join("disk0.dev");
    wait_for("the block device appears", 30, || link.exists());
    let dev = std::fs::read_link(&link).unwrap();
    let loop_name = dev.file_name().unwrap().to_string_lossy().into_owned();
    eprintln!("the disk is {}", dev.display());
    let size: u64 = std::fs::read_to_string(format!("/sys/block/{loop_name}/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        size * 512,
        IMAGE_BYTES,
        "the block device has the disk's size"
    );

    // A file system on it, files written and synced, checked, remounted.
    must(
        "mkfs.ext4",
        Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&dev),
        120,
    );
    rig.mount(&dev);
    let mut sums: Vec<(String, u64)> = Vec::new();
    for (name, data) in files() {
        let mut f = std::fs::File::create(rig.mnt.join(&name)).unwrap();
        f.write_all(&data).unwrap();
        sums.push((name, fnv(&data)));
    }
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    rig.umount();
    must(
        "e2fsck -f (through the member)",
        Command::new("e2fsck").args(["-f", "-n"]).arg(&dev),
        120,
    );
    // What the server wrote to its file is the same clean file system.
    must(
        "e2fsck -f (the server's image file)",
        Command::new("e2fsck").args(["-f", "-n"]).arg(&image),
        120,
    );
    rig.mount(&dev);
    check_files(&rig.mnt, &sums);

    // kill -9 of the server while a file is written: the writer blocks,
    // the server comes back with a new share, dom0 points the entry at
    // it, the member re-issues what was in flight, the write completes.
    let written = Arc::new(AtomicU64::new(0));
    let data = pattern(7, 24 << 20);
    let sum = fnv(&data);
    let writer = {
        let path = rig.mnt.join("during-kill");
        let written = written.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(path)?;
            for (k, chunk) in data.chunks(1 << 20).enumerate() {
                f.write_all(chunk)?;
                if k % 4 == 3 {
                    f.sync_data()?;
                }
                written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            f.sync_all()
        })
    };
    wait_for("the writer gets going", 60, || {
        written.load(Ordering::SeqCst) >= 6 << 20
    });
    rig.kill9_server_with_requests_in_flight(&written);
    let at_kill = written.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    rig.spawn_server();
    // dom0's tool keeps no state: a fresh connection to the new page.
    let mut server_vd = server_page(&mut dom0, &sock);
    let share_ref = serve(&mut dom0, &mut server_vd, 0, false);
    let e = change(&mut dom0, &mut vd, 0, member_entry(share_ref, false));
    assert_eq!(e.status, status::OK, "the member refused the new share");
    let until = Instant::now() + Duration::from_secs(120);
    while !writer.is_finished() {
        assert!(
            Instant::now() < until,
            "the writer did not finish after the re-attach"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    writer
        .join()
        .unwrap()
        .expect("the write through the restart");
    eprintln!(
        "server killed after {} MiB of 24 written; the write completed after the re-attach",
        at_kill >> 20
    );
    let reissued: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("re-issuing"))
        .cloned()
        .collect();
    assert!(
        reissued.iter().any(|l| !l.contains("re-issuing 0 ")),
        "requests were in flight at the kill and re-issued: {reissued:?}"
    );
    sums.push(("during-kill".into(), sum));
    // SAFETY: as above.
    unsafe { libc::sync() };
    rig.umount();
    must(
        "e2fsck -f after the kill",
        Command::new("e2fsck").args(["-f", "-n"]).arg(&dev),
        120,
    );
    rig.mount(&dev);
    check_files(&rig.mnt, &sums);
    rig.umount();

    // A read-only disk is a read-only device with the disk's bytes.
    let ro_ref = serve(&mut dom0, &mut server_vd, 1, true);
    let e = change(&mut dom0, &mut vd, 1, member_entry(ro_ref, true));
    assert_eq!(
        e.status,
        status::OK,
        "the member refused the read-only disk"
    );
    let ro_link = run_dir.join("disk1.dev");
    wait_for("the read-only device appears", 30, || ro_link.exists());
    let ro_dev = std::fs::read_link(&ro_link).unwrap();
    let ro_name = ro_dev.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        std::fs::read_to_string(format!("/sys/block/{ro_name}/ro"))
            .unwrap()
            .trim(),
        "1"
    );
    assert!(std::fs::read(&ro_dev).unwrap() == ro_data);
    // The kernel lets root open it for writing, and refuses the write.
    let wrote = std::fs::OpenOptions::new()
        .write(true)
        .open(&ro_dev)
        .and_then(|mut f| f.write_all(&[0u8; 4096]).and_then(|()| f.sync_all()));
    assert!(wrote.is_err(), "a write to the read-only device succeeded");
    assert!(std::fs::read(&rig.ro_image).unwrap() == ro_data);
    let e = change(&mut dom0, &mut vd, 1, EntryRepr::EMPTY);
    assert_eq!(e.status, status::OK);
    wait_for("the read-only device goes", 10, || {
        !Path::new(&format!("/sys/block/{ro_name}/loop/backing_file")).exists()
    });

    // Removing the entry removes the device.
    let e = change(&mut dom0, &mut vd, 0, EntryRepr::EMPTY);
    assert_eq!(e.status, status::OK);
    wait_for("the link goes", 10, || !link.exists());
    let backing = format!("/sys/block/{loop_name}/loop/backing_file");
    wait_for("the loop device is freed", 10, || {
        !Path::new(&backing).exists()
    });
    assert!(
        !run_dir.join("disk0").exists(),
        "the FUSE file is unmounted and removed"
    );

    // A clean exit.
    let mut m = rig.member.take().unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(m.id() as i32, libc::SIGTERM) };
    wait_for("the member exits", 10, || m.try_wait().unwrap().is_some());
    assert!(m.wait().unwrap().success());
}
