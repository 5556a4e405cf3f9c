//! The guest modules' C header (`guest-drivers/include/xenshare/wire.h`)
//! checked against the wire module, the code of record: a small C program
//! (`guest-drivers/tests/wire-check.c`) prints every offset, size and
//! constant of the header and the lane layouts it computes; this test
//! compiles it with the host's C compiler and compares each line with the
//! Rust value. A field, constant or layout rule changed on one side only
//! fails here.
mod c_common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::process::Command;

use share_hal::lane;
use share_hal::wire::net::NetLayout;
use share_hal::wire::{blk, descriptor, lane_header, net, vdevice};

/// Output of wire-check.c: first word of each line -> the rest.
fn header_facts() -> BTreeMap<String, Vec<String>> {
    let exe = c_common::compile("wire-check", &["tests/wire-check.c"]);
    let out = Command::new(&exe).output().expect("running wire-check");
    assert!(out.status.success());
    let mut facts = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut words = line.split_whitespace().map(str::to_string);
        let key = words.next().unwrap();
        let rest: Vec<String> = words.collect();
        // Layout and crossed lines share a first word; key them fully.
        let key = match key.as_str() {
            "net_layout" | "blk_layout" => format!("{key} {}", rest[0]),
            "crossed" => format!("{key} {} {} {}", rest[0], rest[1], rest[2]),
            _ => key,
        };
        assert!(facts.insert(key.clone(), rest).is_none(), "{key} twice");
    }
    facts
}

struct Check {
    facts: BTreeMap<String, Vec<String>>,
    seen: usize,
    errors: Vec<String>,
}

impl Check {
    fn get(&mut self, key: &str) -> Option<Vec<String>> {
        match self.facts.remove(key) {
            Some(v) => {
                self.seen += 1;
                Some(v)
            }
            None => {
                self.errors
                    .push(format!("{key}: not printed by wire-check.c"));
                None
            }
        }
    }

    fn field(&mut self, key: &str, rust: Range<usize>) {
        if let Some(v) = self.get(key) {
            let c = format!(
                "{}..{}",
                v[0],
                v[0].parse::<usize>().unwrap() + v[1].parse::<usize>().unwrap()
            );
            let r = format!("{}..{}", rust.start, rust.end);
            if c != r {
                self.errors
                    .push(format!("{key}: C has bytes {c}, wire has {r}"));
            }
        }
    }

    fn value(&mut self, key: &str, rust: i64) {
        if let Some(v) = self.get(key) {
            if v[0] != rust.to_string() {
                self.errors
                    .push(format!("{key}: C has {}, wire has {rust}", v[0]));
            }
        }
    }

    /// A field the wire module names by its start only.
    fn at(&mut self, key: &str, start: usize, len: usize) {
        self.field(key, start..start + len);
    }
}

#[test]
fn c_header_matches_wire_module() {
    let mut c = Check {
        facts: header_facts(),
        seen: 0,
        errors: Vec::new(),
    };

    // vdevice page
    use vdevice::{entry_field as ef, field as vf, status};
    c.value("sizeof.xs_vdevice_header", vdevice::HEADER_LEN as i64);
    c.field("xs_vdevice_header.magic", vf::MAGIC);
    c.field("xs_vdevice_header.version", vf::VERSION);
    c.field("xs_vdevice_header.entry_count", vf::ENTRY_COUNT);
    c.field("xs_vdevice_header.change_serial", vf::CHANGE_SERIAL);
    c.field("xs_vdevice_header.ack_serial", vf::ACK_SERIAL);
    c.field("xs_vdevice_header.change_index", vf::CHANGE_INDEX);
    c.field("xs_vdevice_header.ack_status", vf::ACK_STATUS);
    c.field("xs_vdevice_header.domid", vf::DOMID);
    c.field("xs_vdevice_header.reserved0", vf::RESERVED0);
    c.field("xs_vdevice_header.stats_gref", vf::STATS_GREF);
    c.field("xs_vdevice_header.reserved", vf::RESERVED);
    c.value("sizeof.xs_vdevice_entry", vdevice::ENTRY_LEN as i64);
    c.field("xs_vdevice_entry.kind", ef::KIND);
    c.field("xs_vdevice_entry.role", ef::ROLE);
    c.field("xs_vdevice_entry.flags", ef::FLAGS);
    c.field("xs_vdevice_entry.subtype", ef::SUBTYPE);
    c.field("xs_vdevice_entry.numpages", ef::NUMPAGES);
    c.field("xs_vdevice_entry.peer", ef::PEER);
    c.field("xs_vdevice_entry.reserved", ef::RESERVED);
    c.field("xs_vdevice_entry.share_ref", ef::SHARE_REF);
    c.field("xs_vdevice_entry.status", ef::STATUS);
    c.field("xs_vdevice_entry.param", ef::PARAM);
    c.value("XS_VDEVICE_MAGIC", vdevice::MAGIC.into());
    c.value("XS_VDEVICE_VERSION", vdevice::VERSION.into());
    c.value("XS_VDEVICE_HEADER_LEN", vdevice::HEADER_LEN as i64);
    c.value("XS_VDEVICE_ENTRY_LEN", vdevice::ENTRY_LEN as i64);
    c.value("XS_VDEVICE_MAX_ENTRIES", vdevice::MAX_ENTRIES.into());
    c.value("XS_BOOTSTRAP_MAX_LEN", vdevice::BOOTSTRAP_MAX_LEN as i64);
    if let Some(v) = c.get("XS_BOOTSTRAP_KEY") {
        assert_eq!(v[0], vdevice::BOOTSTRAP_KEY, "XS_BOOTSTRAP_KEY");
    }
    c.value("XS_KIND_EMPTY", vdevice::Kind::Empty as i64);
    c.value("XS_KIND_NET", vdevice::Kind::Network as i64);
    c.value("XS_KIND_DISK", vdevice::Kind::Disk as i64);
    c.value("XS_ROLE_MEMBER", vdevice::Role::Member as i64);
    c.value("XS_ROLE_OWNER", vdevice::Role::Owner as i64);
    c.value("XS_ENTRY_READ_ONLY", vdevice::flags::READ_ONLY.into());
    c.value(
        "XS_ENTRY_BIND_ADDRESSES",
        vdevice::flags::BIND_ADDRESSES.into(),
    );
    c.value("XS_ENTRY_PRIVATE", vdevice::flags::PRIVATE.into());
    c.value("XS_ENTRY_PORT_POLICY", vdevice::flags::PORT_POLICY.into());
    c.value("XS_ENTRY_UPLINK", vdevice::flags::UPLINK.into());
    c.value("XS_ENTRY_NET_OWNER", vdevice::flags::NET_OWNER.into());
    c.value("XS_ENTRY_FLAGS_ALL", vdevice::flags::ALL.into());
    for (name, v) in [
        ("OK", status::OK),
        ("ENOENT", status::ENOENT),
        ("EIO", status::EIO),
        ("ENOMEM", status::ENOMEM),
        ("EBUSY", status::EBUSY),
        ("EEXIST", status::EEXIST),
        ("ENODEV", status::ENODEV),
        ("EINVAL", status::EINVAL),
        ("EOPNOTSUPP", status::EOPNOTSUPP),
        ("ETIMEDOUT", status::ETIMEDOUT),
    ] {
        c.value(&format!("XS_STATUS_{name}"), v.into());
    }

    // share descriptor and lanes
    use descriptor::field as df;
    c.value("sizeof.xs_descriptor", 4096);
    c.field("xs_descriptor.magic", df::MAGIC);
    c.field("xs_descriptor.version", df::VERSION);
    c.field("xs_descriptor.flags", df::FLAGS);
    c.field("xs_descriptor.owner", df::OWNER);
    c.field("xs_descriptor.member", df::MEMBER);
    c.field("xs_descriptor.numpages", df::NUMPAGES);
    c.field("xs_descriptor.port", df::PORT);
    c.field("xs_descriptor.reserved", df::RESERVED);
    c.at(
        "xs_descriptor.grefs",
        df::GREFS,
        4 * descriptor::MAX_PAGES as usize,
    );
    c.value("XS_DESCRIPTOR_MAGIC", descriptor::MAGIC.into());
    c.value("XS_DESCRIPTOR_VERSION", descriptor::VERSION.into());
    c.value("XS_DESCRIPTOR_HEADER_LEN", descriptor::HEADER_LEN as i64);
    c.value("XS_SHARE_MAX_PAGES", descriptor::MAX_PAGES.into());
    c.value("XS_LANE_HEADER_LEN", lane_header::LEN as i64);
    c.value("XS_LANE_PROD", lane_header::PROD as i64);
    c.value("XS_LANE_PROD_EVENT", lane_header::PROD_EVENT as i64);
    c.value("XS_LANE_CONS", lane_header::CONS as i64);
    c.value("XS_LANE_CONS_EVENT", lane_header::CONS_EVENT as i64);

    // network share
    use net::{field as nf, slot_field as sf};
    c.value("sizeof.xs_net_control", net::CONTROL_LEN as i64);
    c.field("xs_net_control.magic", nf::MAGIC);
    c.field("xs_net_control.version", nf::VERSION);
    c.field("xs_net_control.reserved0", nf::RESERVED0);
    c.field("xs_net_control.features_offered", nf::FEATURES_OFFERED);
    c.field("xs_net_control.features_accepted", nf::FEATURES_ACCEPTED);
    c.field("xs_net_control.mac", nf::MAC);
    c.field("xs_net_control.mtu", nf::MTU);
    c.field("xs_net_control.link_state", nf::LINK_STATE);
    c.field("xs_net_control.member_state", nf::MEMBER_STATE);
    c.field("xs_net_control.reserved1", nf::RESERVED1);
    c.value("sizeof.xs_net_slot_header", net::SLOT_HEADER_LEN as i64);
    c.field("xs_net_slot_header.len", sf::LEN);
    c.field("xs_net_slot_header.flags", sf::FLAGS);
    c.field("xs_net_slot_header.csum_start", sf::CSUM_START);
    c.field("xs_net_slot_header.csum_offset", sf::CSUM_OFFSET);
    c.field("xs_net_slot_header.gso_size", sf::GSO_SIZE);
    c.at("xs_net_slot_header.gso_type", sf::GSO_TYPE, 1);
    c.at("xs_net_slot_header.gso_flags", sf::GSO_FLAGS, 1);
    c.field("xs_net_slot_header.reserved", sf::RESERVED);
    for (name, v) in [
        ("MAGIC", net::MAGIC.into()),
        ("VERSION", net::VERSION.into()),
        ("CONTROL_LEN", net::CONTROL_LEN as i64),
        ("TX_LANE", net::TX_LANE as i64),
        ("SLOT_SIZE", net::SLOT_SIZE as i64),
        ("SLOT_HEADER_LEN", net::SLOT_HEADER_LEN as i64),
        ("SLOT_DATA_MAX", net::SLOT_DATA_MAX as i64),
        ("MIN_PAGES", net::MIN_PAGES.into()),
        ("MTU_MIN", net::MTU_MIN.into()),
        ("MTU_DEFAULT", net::MTU_DEFAULT.into()),
        ("MTU_STANDARD_MAX", net::MTU_STANDARD_MAX.into()),
        ("MTU_MAX", net::MTU_MAX.into()),
        ("FRAME_OVERHEAD", net::FRAME_OVERHEAD as i64),
        ("FRAME_MIN", net::FRAME_MIN as i64),
        ("GSO_MAX_FRAME", net::GSO_MAX_FRAME as i64),
        ("GSO_MAX_SLOTS", net::GSO_MAX_SLOTS.into()),
        ("GSO_MAX_SEGS", net::GSO_MAX_SEGS as i64),
        ("GSO_MAX_UDP_SEGS", net::GSO_MAX_UDP_SEGS as i64),
        ("GSO_MIN_PAGES", net::GSO_MIN_PAGES.into()),
        ("F_CSUM_BLANK", net::features::CSUM_BLANK.into()),
        ("F_DATA_VALIDATED", net::features::DATA_VALIDATED.into()),
        ("F_JUMBO", net::features::JUMBO.into()),
        ("F_GSO", net::features::GSO.into()),
        ("F_ALL", net::features::ALL.into()),
        ("LINK_DOWN", net::LINK_DOWN.into()),
        ("LINK_UP", net::LINK_UP.into()),
        ("MEMBER_CLOSED", net::MEMBER_CLOSED.into()),
        ("MEMBER_READY", net::MEMBER_READY.into()),
        ("SLOT_MORE", net::flags::MORE.into()),
        ("SLOT_CSUM_BLANK", net::flags::CSUM_BLANK.into()),
        ("SLOT_DATA_VALIDATED", net::flags::DATA_VALIDATED.into()),
        ("SLOT_FLAGS_ALL", net::flags::ALL.into()),
        ("GSO_NONE", net::gso::NONE.into()),
        ("GSO_TCPV4", net::gso::TCPV4.into()),
        ("GSO_TCPV6", net::gso::TCPV6.into()),
        ("GSO_UDP_L4", net::gso::UDP_L4.into()),
        ("GSO_TYPE_MAX", net::gso::TYPE_MAX.into()),
        ("GSO_FLAG_ECN", net::gso::FLAG_ECN.into()),
        ("GSO_FLAGS_ALL", net::gso::FLAGS_ALL.into()),
    ] {
        c.value(&format!("XS_NET_{name}"), v);
    }

    // block share
    use blk::{field as bf, request_field as rf, response_field as pf, segment_field as gf};
    c.value("sizeof.xs_blk_control", blk::CONTROL_LEN as i64);
    c.field("xs_blk_control.magic", bf::MAGIC);
    c.field("xs_blk_control.version", bf::VERSION);
    c.field("xs_blk_control.sector_size", bf::SECTOR_SIZE);
    c.field("xs_blk_control.features", bf::FEATURES);
    c.field("xs_blk_control.flags", bf::FLAGS);
    c.field("xs_blk_control.capacity", bf::CAPACITY);
    c.field(
        "xs_blk_control.max_indirect_segments",
        bf::MAX_INDIRECT_SEGMENTS,
    );
    c.field("xs_blk_control.reserved", bf::RESERVED);
    c.value("sizeof.xs_blk_request", blk::REQUEST_SIZE as i64);
    c.field("xs_blk_request.op", rf::OP);
    c.field("xs_blk_request.flags", rf::FLAGS);
    c.field("xs_blk_request.nr_segments", rf::NR_SEGMENTS);
    c.field("xs_blk_request.reserved0", rf::RESERVED0);
    c.field("xs_blk_request.id", rf::ID);
    c.field("xs_blk_request.sector", rf::SECTOR);
    c.at(
        "xs_blk_request.u.seg",
        rf::SEGMENTS,
        blk::MAX_INLINE_SEGMENTS * blk::SEGMENT_LEN,
    );
    c.field("xs_blk_request.u.discard.nr_sectors", rf::NR_SECTORS);
    c.field("xs_blk_request.u.indirect.op", rf::INDIRECT_OP);
    c.field("xs_blk_request.u.indirect.reserved", rf::INDIRECT_RESERVED);
    c.at(
        "xs_blk_request.u.indirect.grefs",
        rf::INDIRECT_GREFS,
        4 * blk::MAX_INDIRECT_PAGES,
    );
    c.value("sizeof.xs_blk_segment", blk::SEGMENT_LEN as i64);
    c.field("xs_blk_segment.gref", gf::GREF);
    c.field("xs_blk_segment.first_sect", gf::FIRST_SECT);
    c.field("xs_blk_segment.last_sect", gf::LAST_SECT);
    c.field("xs_blk_segment.reserved", gf::RESERVED);
    c.value("sizeof.xs_blk_response", blk::RESPONSE_SIZE as i64);
    c.field("xs_blk_response.id", pf::ID);
    c.field("xs_blk_response.op", pf::OP);
    c.field("xs_blk_response.reserved0", pf::RESERVED0);
    c.field("xs_blk_response.status", pf::STATUS);
    c.field("xs_blk_response.reserved1", pf::RESERVED1);
    use blk::{Op, Status};
    for (name, v) in [
        ("MAGIC", blk::MAGIC.into()),
        ("VERSION", blk::VERSION.into()),
        ("SECTOR_SIZE", blk::SECTOR_SIZE as i64),
        ("SECTORS_PER_PAGE", blk::SECTORS_PER_PAGE.into()),
        ("CONTROL_LEN", blk::CONTROL_LEN as i64),
        ("REQUEST_LANE", blk::REQUEST_LANE as i64),
        ("REQUEST_SIZE", blk::REQUEST_SIZE as i64),
        ("RESPONSE_SIZE", blk::RESPONSE_SIZE as i64),
        ("SEGMENT_LEN", blk::SEGMENT_LEN as i64),
        ("MAX_INLINE_SEGMENTS", blk::MAX_INLINE_SEGMENTS as i64),
        ("MAX_INDIRECT_PAGES", blk::MAX_INDIRECT_PAGES as i64),
        (
            "SEGMENTS_PER_INDIRECT_PAGE",
            blk::SEGMENTS_PER_INDIRECT_PAGE as i64,
        ),
        ("MAX_INDIRECT_SEGMENTS", blk::MAX_INDIRECT_SEGMENTS.into()),
        ("MIN_PAGES", blk::MIN_PAGES.into()),
        ("MIN_SLOTS", blk::MIN_SLOTS.into()),
        ("F_FLUSH", blk::features::FLUSH.into()),
        ("F_DISCARD", blk::features::DISCARD.into()),
        ("F_FUA", blk::features::FUA.into()),
        ("F_INDIRECT", blk::features::INDIRECT.into()),
        ("F_ALL", blk::features::ALL.into()),
        ("READ_ONLY", blk::control_flags::READ_ONLY.into()),
        ("OP_READ", Op::Read as i64),
        ("OP_WRITE", Op::Write as i64),
        ("OP_FLUSH", Op::Flush as i64),
        ("OP_DISCARD", Op::Discard as i64),
        ("OP_INDIRECT", Op::Indirect as i64),
        ("REQ_FUA", blk::request_flags::FUA.into()),
        ("REQ_FLAGS_ALL", blk::request_flags::ALL.into()),
        ("STATUS_OKAY", Status::Okay as i64),
        ("STATUS_ERROR", Status::Error as i64),
        ("STATUS_NOT_SUPPORTED", Status::NotSupported as i64),
    ] {
        c.value(&format!("XS_BLK_{name}"), v);
    }

    // Lane layouts for every numpages, including the refused ones.
    for n in 0..=descriptor::MAX_PAGES + 1 {
        let expect = match NetLayout::new(n) {
            Ok(l) => format!(
                "{n} {} {} {} {}",
                l.tx.slot_count, l.tx.slots, l.rx.header, l.rx.slots
            ),
            Err(_) => format!("{n} 0"),
        };
        check_line(&mut c, &format!("net_layout {n}"), &expect);
        let expect = match blk::BlkLayout::new(n) {
            Ok(l) => format!(
                "{n} {} {} {} {}",
                l.requests.slot_count, l.requests.slots, l.responses.header, l.responses.slots
            ),
            Err(_) => format!("{n} 0"),
        };
        check_line(&mut c, &format!("blk_layout {n}"), &expect);
    }
    let crossed: Vec<String> = c
        .facts
        .keys()
        .filter(|k| k.starts_with("crossed "))
        .cloned()
        .collect();
    assert_eq!(crossed.len(), 24, "wire-check.c prints 24 crossed cases");
    for key in crossed {
        let v = c.get(&key).unwrap();
        let w: Vec<u32> = key
            .split_whitespace()
            .skip(1)
            .map(|s| s.parse().unwrap())
            .collect();
        let rust = lane::crossed(w[0], w[1], w[2]) as i64;
        if v[3] != rust.to_string() {
            c.errors
                .push(format!("{key}: C says {}, lane::crossed says {rust}", v[3]));
        }
    }

    let unchecked: Vec<&String> = c.facts.keys().collect();
    assert!(
        c.errors.is_empty() && unchecked.is_empty(),
        "wire.h disagrees with share-hal's wire module:\n{}\nprinted but not checked: {unchecked:?}",
        c.errors.join("\n")
    );
    assert!(c.seen > 2000, "only {} facts checked", c.seen);
}

fn check_line(c: &mut Check, key: &str, expect: &str) {
    if let Some(v) = c.get(key) {
        let got = format!(
            "{} {}",
            key.split_whitespace().nth(1).unwrap(),
            v[1..].join(" ")
        );
        if got.trim_end() != expect {
            c.errors
                .push(format!("{key}: C has [{got}], wire has [{expect}]"));
        }
    }
}
