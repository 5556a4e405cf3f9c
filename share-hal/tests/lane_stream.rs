//! A producer and a consumer streaming over one lane, in two threads and in
//! two processes, with random batch sizes and indexes starting near the
//! wrap: no item may be lost, duplicated or reordered, and no trigger may be
//! lost (a lost trigger leaves one side waiting: the wait times out and the
//! test fails).

mod lane_common;

use std::process::Command;
use std::time::Duration;

use lane_common::{stream_frame, Rng, SharedPages, Trigger};
use proptest::prelude::*;
use share_hal::frames::{FrameMeta, FrameReceiver, FrameSender, NET_SLOT_SIZE};
use share_hal::lane::{init, Consumer, LaneLayout, Producer};
use share_hal::SharedMem;

/// Long enough that only a lost trigger (not a slow machine) reaches it.
const WAIT: Duration = Duration::from_secs(30);
const CHILD_ENV: &str = "LANE_STREAM_CHILD";
/// Raw-lane items: a u32 length, then up to this many bytes.
const ITEM_MAX: usize = 56;
const RAW_SLOT: usize = 64;
const MAX_FRAME: usize = 3 * 1514;

#[derive(Clone, Copy, Debug)]
struct Plan {
    frames: bool,
    seed: u64,
    start: u32,
    slot_log2: u32,
    count: u64,
    max_batch: u64,
}

impl Plan {
    fn layout(&self) -> LaneLayout {
        let size = if self.frames { NET_SLOT_SIZE } else { RAW_SLOT };
        LaneLayout::new(1 << self.slot_log2, size).unwrap()
    }

    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.frames as u8, self.seed, self.start, self.slot_log2, self.count, self.max_batch
        )
    }

    fn decode(s: &str) -> Plan {
        let v: Vec<u64> = s.split(' ').map(|x| x.parse().unwrap()).collect();
        Plan {
            frames: v[0] != 0,
            seed: v[1],
            start: v[2] as u32,
            slot_log2: v[3] as u32,
            count: v[4],
            max_batch: v[5],
        }
    }
}

fn produce(plan: Plan, mem: SharedMem<'_>, data: &Trigger, space: &Trigger) {
    let mut rng = Rng::new(plan.seed ^ 0x5eed);
    let mut p = Producer::attach(mem, plan.layout()).unwrap();
    let mut item = Vec::new();
    let mut i = 0u64;
    if plan.frames {
        let mut tx = FrameSender::new(p, MAX_FRAME).unwrap();
        while i < plan.count {
            let batch = 1 + rng.below(plan.max_batch);
            let mut k = 0;
            while k < batch && i < plan.count {
                stream_frame(plan.seed, i, MAX_FRAME, &mut item);
                if tx.send(&item, FrameMeta::default()).unwrap() {
                    i += 1;
                    k += 1;
                    continue;
                }
                // Full: publish what we have, or the consumer never frees.
                if tx.publish().unwrap() {
                    data.notify();
                }
                if !tx.prepare_wait(item.len()).unwrap() {
                    assert!(space.wait(WAIT), "producer: lost trigger at frame {i}");
                }
            }
            if rng.below(4) != 0 && tx.publish().unwrap() {
                data.notify();
            }
        }
        if tx.publish().unwrap() {
            data.notify();
        }
        return;
    }
    while i < plan.count {
        let want = (1 + rng.below(plan.max_batch)).min(plan.count - i) as u32;
        let got = if p.reserve(want).unwrap() {
            want
        } else {
            p.free_cached()
        };
        if got == 0 {
            if p.publish().unwrap() {
                data.notify();
            }
            if p.prepare_wait(1).unwrap() == 0 {
                assert!(space.wait(WAIT), "producer: lost trigger at item {i}");
            }
            continue;
        }
        for k in 0..got {
            stream_frame(plan.seed, i + k as u64, ITEM_MAX, &mut item);
            let slot = p.slot(k).unwrap();
            slot.write_u32(0, item.len() as u32).unwrap();
            slot.write_from(4, &item).unwrap();
        }
        p.commit(got).unwrap();
        i += got as u64;
        if rng.below(4) != 0 && p.publish().unwrap() {
            data.notify();
        }
    }
    if p.publish().unwrap() {
        data.notify();
    }
}

fn consume(plan: Plan, mem: SharedMem<'_>, data: &Trigger, space: &Trigger) {
    let mut rng = Rng::new(plan.seed ^ 0xc0de);
    let c = Consumer::attach(mem, plan.layout()).unwrap();
    let mut want = Vec::new();
    let mut j = 0u64;
    if plan.frames {
        let mut rx = FrameReceiver::new(c, MAX_FRAME).unwrap();
        while j < plan.count {
            if rx.poll().unwrap() == 0 {
                if rx.release().unwrap() {
                    space.notify();
                }
                if rx.prepare_wait().unwrap() == 0 {
                    assert!(data.wait(WAIT), "consumer: lost trigger at frame {j}");
                }
                continue;
            }
            let limit = 1 + rng.below(plan.max_batch);
            for _ in 0..limit {
                let Some(f) = rx.next().unwrap() else { break };
                stream_frame(plan.seed, j, MAX_FRAME, &mut want);
                assert_eq!(f.data, &want[..], "frame {j}");
                j += 1;
            }
            if rng.below(3) != 0 && rx.release().unwrap() {
                space.notify();
            }
        }
        assert_eq!(rx.poll().unwrap(), 0, "items beyond the stream");
        if rx.release().unwrap() {
            space.notify();
        }
        return;
    }
    let mut c = c;
    let mut got = [0u8; ITEM_MAX];
    while j < plan.count {
        if c.poll().unwrap() == 0 {
            if c.release().unwrap() {
                space.notify();
            }
            if c.prepare_wait().unwrap() == 0 {
                assert!(data.wait(WAIT), "consumer: lost trigger at item {j}");
            }
            continue;
        }
        let limit = 1 + rng.below(plan.max_batch);
        for _ in 0..limit {
            let Some(slot) = c.slot().unwrap() else { break };
            let len = slot.read_u32(0).unwrap() as usize;
            assert!(len <= ITEM_MAX, "item {j}: length {len}");
            slot.read_into(4, &mut got[..len]).unwrap();
            c.advance();
            stream_frame(plan.seed, j, ITEM_MAX, &mut want);
            assert_eq!(&got[..len], &want[..], "item {j}");
            j += 1;
        }
        if rng.below(3) != 0 && c.release().unwrap() {
            space.notify();
        }
    }
    assert_eq!(c.poll().unwrap(), 0, "items beyond the stream");
    if c.release().unwrap() {
        space.notify();
    }
}

fn run_threads(plan: Plan) {
    let pages = SharedPages::new(plan.layout().bytes());
    init(pages.mem(), plan.layout(), plan.start).unwrap();
    let (data, space) = (Trigger::new(), Trigger::new());
    std::thread::scope(|s| {
        let consumer = s.spawn(|| consume(plan, pages.mem(), &data, &space));
        produce(plan, pages.mem(), &data, &space);
        consumer.join().expect("consumer thread failed");
    });
}

fn run_processes(plan: Plan) {
    let pages = SharedPages::new(plan.layout().bytes());
    init(pages.mem(), plan.layout(), plan.start).unwrap();
    let (data, space) = (Trigger::new(), Trigger::new());
    let env = format!(
        "{} {} {} {}",
        pages.raw_fd(),
        data.raw_fd(),
        space.raw_fd(),
        plan.encode()
    );
    // The child is this test binary again, running only `child_entry`; it
    // inherits the memfd and the eventfds (not close-on-exec).
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, env)
        // The child's test harness chatter; its panics go to stderr.
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn consumer process");
    produce(plan, pages.mem(), &data, &space);
    let status = child.wait().unwrap();
    assert!(status.success(), "consumer process failed: {status}");
}

/// The consumer process of `run_processes`; a no-op in a normal test run.
#[test]
fn child_entry() {
    let Ok(env) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (fds, plan) = env.split_at(env.match_indices(' ').nth(2).unwrap().0);
    let fds: Vec<i32> = fds.split(' ').map(|x| x.parse().unwrap()).collect();
    let plan = Plan::decode(plan.trim_start());
    let pages = SharedPages::inherit(fds[0], plan.layout().bytes());
    let (data, space) = (Trigger::inherit(fds[1]), Trigger::inherit(fds[2]));
    consume(plan, pages.mem(), &data, &space);
}

fn plans() -> impl Strategy<Value = Plan> {
    (
        any::<bool>(),
        any::<u64>(),
        prop_oneof![Just(0u32), (u32::MAX - 3000)..=u32::MAX, any::<u32>()],
        1u32..7,
        1u64..3000,
        1u64..80,
    )
        .prop_map(|(frames, seed, start, slot_log2, count, max_batch)| Plan {
            frames,
            seed,
            start,
            // A max frame takes 3 slots: frame lanes have at least 4.
            slot_log2: if frames {
                slot_log2.clamp(2, 5)
            } else {
                slot_log2
            },
            count: if frames { count.min(600) } else { count },
            max_batch,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn stream_between_threads(plan in plans()) {
        run_threads(plan);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn stream_between_processes(plan in plans()) {
        run_processes(plan);
    }
}

/// A long run across the wrap with the smallest lane, where every batch
/// fills it: the most waits on both sides, so the most chances to lose a
/// trigger.
#[test]
fn tiny_lane_long_stream_between_processes() {
    run_processes(Plan {
        frames: false,
        seed: 7,
        start: u32::MAX - 10,
        slot_log2: 1,
        count: 20_000,
        max_batch: 3,
    });
}
