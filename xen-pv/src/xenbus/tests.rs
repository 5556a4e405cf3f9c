//! The shared handshake steps against dom0 played with a map.
use super::*;
use alloc::collections::BTreeMap;
use alloc::string::ToString;
use alloc::vec;
use core::cell::Cell;

const BE: &str = "/local/domain/0/backend/vif/5/0";

#[derive(Default)]
struct Store {
    keys: BTreeMap<String, String>,
    writes: Vec<(String, String)>,
    reads: u32,
}

impl Xenbus for Store {
    fn read(&mut self, path: &str) -> Result<String> {
        self.reads += 1;
        self.keys.get(path).cloned().ok_or(Error::Hypervisor {
            op: "xenstore request",
            code: -2,
        })
    }
    fn write(&mut self, path: &str, value: &str) -> Result<()> {
        self.writes.push((path.into(), value.into()));
        self.keys.insert(path.into(), value.into());
        Ok(())
    }
    fn directory(&mut self, path: &str) -> Result<Vec<String>> {
        let prefix = format!("{path}/");
        let mut names: Vec<String> = self
            .keys
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|k| k.split('/').next())
            .map(String::from)
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(Error::Hypervisor {
                op: "xenstore request",
                code: -2,
            });
        }
        Ok(names)
    }
}

fn store(state: &str) -> Store {
    let mut s = Store::default();
    s.keys.insert("device/vif/0/backend".into(), BE.into());
    s.keys.insert("device/vif/0/backend-id".into(), "0".into());
    s.keys.insert(format!("{BE}/state"), state.into());
    s
}

#[test]
fn devices_by_class_and_none_without_the_directory() {
    let mut s = store("2");
    s.keys.insert("device/vif/3/backend".into(), BE.into());
    assert_eq!(
        devices(&mut s, "vif").unwrap(),
        [
            ("0".to_string(), "device/vif/0".to_string()),
            ("3".to_string(), "device/vif/3".to_string())
        ]
    );
    assert!(devices(&mut s, "vbd").unwrap().is_empty());
    assert_eq!(device_number("device/vbd/51712"), Some(51712));
    assert_eq!(device_number("device/vbd/x"), None);
}

#[test]
fn numbers_are_bounded_and_strict() {
    let mut s = store("2");
    for (v, ok) in [
        ("4", Some(Some(4))),
        ("4\0", Some(Some(4))),
        (" 7 ", Some(Some(7))),
        ("-1", None),
        ("0x10", None),
        ("123456789012345678901", None),
        ("", None),
    ] {
        s.keys.insert("k".into(), v.into());
        assert_eq!(read_num(&mut s, "k").ok(), ok, "{v:?}");
    }
    assert_eq!(read_num(&mut s, "absent"), Ok(None));
}

#[test]
fn the_backend_must_name_itself_properly() {
    let now = || 0u64;
    let mut sleep = |_| {};
    for (key, v, why) in [
        ("device/vif/0/backend", "backend/vif/5/0", "malformed"),
        ("device/vif/0/backend", "/local/domain/0/a b", "malformed"),
        ("device/vif/0/backend-id", "70000", "backend-id"),
        ("device/vif/0/backend-id", "x", "backend-id"),
    ] {
        let mut s = store("2");
        s.keys.insert(key.into(), v.into());
        let e = Frontend::open(&mut s, "device/vif/0", 1, &now, &mut sleep)
            .err()
            .unwrap();
        assert!(e.0.starts_with("device/vif/0: "), "{e}");
        assert!(e.0.contains(why), "{e}");
    }
    let mut s = store("2");
    let long = format!("/local/domain/{}", "a".repeat(300));
    s.keys.insert("device/vif/0/backend".into(), long);
    assert!(Frontend::open(&mut s, "device/vif/0", 1, &now, &mut sleep).is_err());
}

#[test]
fn waits_end_at_the_state_a_close_or_the_deadline() {
    let t = Cell::new(0u64);
    let now = || t.get();
    let mut sleeps = 0;
    let mut sleep = |until: u64| {
        sleeps += 1;
        t.set(until);
    };
    let mut s = store("1");
    {
        let mut f =
            Frontend::open(&mut s, "device/vif/0", 1_000_000_000, &now, &mut sleep).unwrap();
        assert_eq!((f.backend(), f.backend_path()), (0, BE));
        let e = f.wait_state(2, "ready").unwrap_err();
        assert_eq!(
            e.0,
            "device/vif/0: the backend did not get ready within 1 s"
        );
    }
    // Bounded: a poll every 50 ms.
    assert_eq!(sleeps, 20);
    let mut sleep = |_| {};
    let mut s = store("5");
    let mut f = Frontend::open(&mut s, "device/vif/0", 1, &now, &mut sleep).unwrap();
    assert!(f
        .wait_state(2, "ready")
        .unwrap_err()
        .0
        .contains("closed (state 5)"));
    let mut s = store("4");
    let mut f = Frontend::open(&mut s, "device/vif/0", 1, &now, &mut sleep).unwrap();
    assert_eq!(f.wait_state(2, "ready"), Ok(4));
}

#[test]
fn offers_are_a_plain_1_and_writes_go_to_the_device() {
    let now = || 0u64;
    let mut sleep = |_| {};
    let mut s = store("2");
    for (k, v) in [("feature-a", "1"), ("feature-b", "0"), ("feature-c", "yes")] {
        s.keys.insert(format!("{BE}/{k}"), v.into());
    }
    s.keys
        .insert("device/vif/0/mac".into(), "00:16:3e:00:00:01".into());
    let mut f = Frontend::open(&mut s, "device/vif/0", 1, &now, &mut sleep).unwrap();
    assert!(f.offered("feature-a"));
    assert!(!f.offered("feature-b") && !f.offered("feature-c") && !f.offered("feature-d"));
    assert!(f.backend_num("feature-c").is_err());
    f.write("ring-ref", "8").unwrap();
    assert_eq!(f.read_own("mac").as_deref(), Some("00:16:3e:00:00:01"));
    assert_eq!(f.read_own("nothing"), None);
    assert_eq!(s.writes, vec![("device/vif/0/ring-ref".into(), "8".into())]);
}
