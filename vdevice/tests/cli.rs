//! The real `vdevice` binary on a host without Xen (where `cargo xtask test
//! --tier unit` runs): bad input is reported as such before any of Xen's
//! devices is opened, and `--list` shows the record with the live state
//! marked unavailable. Where a test needs running domains, a stand-in `xl`
//! on PATH prints the table `xl list` prints in dom0.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vdevice::record::{Device, Domain, Record, RecordFile, What};

/// A scratch directory of its own for each test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdevice-cli-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `vdevice --record DIR/vdevice.json ARGS`, with `path_dirs` first on
/// PATH.
fn vdevice(dir: &Path, path_dirs: &[&Path], args: &[&str]) -> Output {
    let mut path = std::env::join_paths(path_dirs).unwrap();
    if let Some(p) = std::env::var_os("PATH") {
        path = std::env::join_paths(
            path_dirs
                .iter()
                .map(|d| d.to_path_buf())
                .chain(std::env::split_paths(&p)),
        )
        .unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_vdevice"))
        .arg("--record")
        .arg(dir.join("vdevice.json"))
        .args(args)
        .env("PATH", path)
        .env_remove("VDEVICE_RECORD")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Fails naming the output unless the command failed with `want` and never
/// got as far as Xen's devices.
fn refused_with(o: &Output, want: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "it succeeded: {err}");
    assert!(err.contains(want), "wanted {want:?}, got: {err}");
    assert!(
        !err.contains("gntdev") && !err.contains("/dev/xen"),
        "it opened Xen's devices first: {err}"
    );
}

/// A directory holding an `xl` that answers `xl list` as dom0's does with
/// netback-uk, blkback-uk and guest1 running (and fails on anything else).
fn fake_xl(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let xl = bin.join("xl");
    fs::write(
        &xl,
        "#!/bin/sh\n\
         [ \"$1\" = list ] || { echo \"xl $*: not in this test\" >&2; exit 1; }\n\
         cat <<'EOF'\n\
         Name                                        ID   Mem VCPUs\tState\tTime(s)\n\
         Domain-0                                     0  1024     2     r-----      12.3\n\
         netback-uk                                   1    16     1     -b----       0.4\n\
         blkback-uk                                   2    16     1     -b----       0.4\n\
         guest1                                       3   256     1     -b----       2.0\n\
         EOF\n",
    )
    .unwrap();
    fs::set_permissions(&xl, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn an_unknown_kind_is_named() {
    let dir = scratch("kind");
    let o = vdevice(&dir, &[], &["--create", "frobnicate", "0", "1"]);
    refused_with(&o, "--create frobnicate: the kinds are net and block");
    // Nothing was recorded, not even an empty record.
    assert!(!dir.join("vdevice.json").exists());
}

#[test]
fn a_missing_file_is_named() {
    let dir = scratch("file");
    let missing = dir.join("nonexistent.img");
    let o = vdevice(
        &dir,
        &[],
        &["--create", "block", missing.to_str().unwrap(), "1"],
    );
    refused_with(
        &o,
        &format!("{}: No such file or directory", missing.display()),
    );
    let o = vdevice(
        &dir,
        &[],
        &["--create", "block", dir.to_str().unwrap(), "1"],
    );
    refused_with(&o, "a directory, not a file or block device");
}

#[test]
fn an_unknown_domain_name_is_named() {
    let dir = scratch("domain");
    let bin = fake_xl(&dir);
    let o = vdevice(&dir, &[&bin], &["--create", "net", "0", "guest1", "nosuch"]);
    refused_with(&o, "no running domain has the id or name \"nosuch\"");
    let o = vdevice(
        &dir,
        &[&bin],
        &["--create", "net", "guest1", "--backend", "nb2"],
    );
    refused_with(&o, "the backend domain \"nb2\" is not running");
    let disk = dir.join("disk.img");
    fs::write(&disk, [0u8; 4096]).unwrap();
    let o = vdevice(
        &dir,
        &[&bin],
        &["--create", "block", disk.to_str().unwrap(), "guest2"],
    );
    refused_with(&o, "no running domain has the id or name \"guest2\"");
    // Without xl (a host without Xen's tools), the names cannot be
    // checked, and it says so instead of blaming gntdev.
    let empty = dir.join("empty");
    fs::create_dir_all(&empty).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vdevice"))
        .arg("--record")
        .arg(dir.join("vdevice.json"))
        .args(["--create", "net", "0", "guest1"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    refused_with(&o, "listing the running domains failed: cannot run xl");
}

fn recorded_lan(dir: &Path) {
    let path = dir.join("vdevice.json");
    let file = RecordFile::lock(&path).unwrap();
    let mut r = Record::default();
    r.devices.push(Device {
        name: "net0".into(),
        what: What::Net {
            lan: 0,
            bind_addresses: false,
            private: false,
            rate: None,
            addresses: vec![],
            uplink: None,
            macs: vec![],
        },
        backend: Domain::new("netback-uk", 1),
        features: 0xb,
        pages: 258,
        members: vec![Domain::new("guest1", 3), Domain::new("guest2", 4)],
        stale: None,
    });
    file.save(&r).unwrap();
}

#[test]
fn an_unknown_device_is_named() {
    let dir = scratch("device");
    recorded_lan(&dir);
    let bin = fake_xl(&dir);
    for args in [
        &["--add", "net7", "guest1"][..],
        &["--remove", "blk0", "guest1"],
        &["--destroy", "net1"],
    ] {
        let o = vdevice(&dir, &[&bin], args);
        refused_with(&o, &format!("no device named \"{}\"", args[1]));
    }
    let o = vdevice(&dir, &[&bin], &["--remove", "net0", "nosuch"]);
    refused_with(&o, "no running domain has the id or name \"nosuch\"");
    // The record is as it was.
    let text = fs::read_to_string(dir.join("vdevice.json")).unwrap();
    assert!(text.contains("\"guest2\""), "{text}");
}

#[test]
fn the_record_is_listed_without_xen() {
    let dir = scratch("list");
    let o = vdevice(&dir, &[], &["--list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "no devices\n");
    recorded_lan(&dir);
    let o = vdevice(&dir, &[], &["--list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("net0: LAN 0\n"), "{out}");
    assert!(out.contains("backend netback-uk (domain 1)"), "{out}");
    assert!(out.contains("member guest1 (domain 3)"), "{out}");
    assert!(out.contains("member guest2 (domain 4)"), "{out}");
    if !Path::new("/dev/xen/gntdev").exists() {
        // Every live state is marked unavailable, and why.
        assert_eq!(
            out.matches(": unavailable (cannot open Xen's devices")
                .count(),
            3,
            "{out}"
        );
        assert!(
            stderr(&o).contains("the live state is unavailable"),
            "{}",
            stderr(&o)
        );
        let o = vdevice(&dir, &[], &["--list", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v[0]["name"], "net0");
        assert_eq!(v[0]["members"][1]["name"], "guest2");
        assert!(v[0]["members"][1]["state"]
            .as_str()
            .unwrap()
            .starts_with("unavailable"));
    }
}
