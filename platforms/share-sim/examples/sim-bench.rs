//! Costs of the simulation platform between two processes: trigger round
//! trips, grant-copy throughput, map+unmap. The owner (this process, with
//! the broker on its threads) re-executes itself as the member.
//!
//! `cargo run --release -p share-sim --example sim-bench`

fn main() -> Result<(), share_hal::Error> {
    bench::main()
}

mod bench {
    use std::process::Command;
    use std::time::Instant;

    use share_hal::platform::{
        Access, CopyPtr, CopySeg, CopyStatus, GrantRef, GrantTable, Memory, PageBlock, PAGE_SIZE,
    };
    use share_hal::share::{deadline_in, sg_xfer, watch, Attached, Share, ShareRef};
    use share_hal::{Error, Result};
    use share_sim::{temp_socket_path, Broker, SimPlatform};

    const OWNER: u16 = 1;
    const MEMBER: u16 = 2;
    const ROUND_TRIPS: u32 = 20_000;
    /// Pages the member grants for the copy test (1 MiB).
    const BUF_PAGES: usize = 256;
    const COPY_ROUNDS: usize = 64;
    const MAP_ROUNDS: usize = 2_000;
    const SECOND: u64 = 1_000_000_000;

    fn wait_one(p: &mut SimPlatform) -> Result<()> {
        let dl = deadline_in(p, 10 * SECOND);
        watch(p, dl, |_| {}).map(|_| ())
    }

    pub fn main() -> Result<()> {
        if let Ok(sock) = std::env::var("XS_BENCH_SOCK") {
            return member(&sock);
        }
        let path = temp_socket_path("bench");
        let _broker = Broker::spawn(&path)?;
        let mut o = SimPlatform::connect(&path, OWNER)?;
        let mut share = Share::create(&mut o, 1 + BUF_PAGES)?;
        let r = share.add_member(&mut o, MEMBER)?;
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env("XS_BENCH_SOCK", &path)
            .env("XS_BENCH_GREF", r.descriptor.0.to_string())
            .spawn()
            .expect("spawn the member");

        // On failure the member times out waiting and exits too.
        let measured = measure(&mut o, &mut share);
        let status = child.wait().expect("member exit");
        measured?;
        assert!(status.success(), "member failed: {status}");
        share.remove_member(&mut o, MEMBER)?;
        share.destroy(&mut o)?;
        Ok(())
    }

    fn measure(o: &mut SimPlatform, share: &mut Share<SimPlatform>) -> Result<()> {
        // The member announces its buffer grants in page 0, then triggers.
        wait_one(o)?;
        let grefs: Vec<GrantRef> = (0..BUF_PAGES)
            .map(|i| share.mem().read_u32(4 * i).map(GrantRef))
            .collect::<Result<_>>()?;

        // 1. Trigger round trips.
        let t = Instant::now();
        for _ in 0..ROUND_TRIPS {
            share.trigger(o, MEMBER)?;
            wait_one(o)?;
        }
        let rtt = t.elapsed() / ROUND_TRIPS;
        println!("trigger round trip (owner -> member -> owner): {rtt:?}");

        // 2. Grant copy: gather the member's 1 MiB into the share, 4 KiB
        //    segments, batched by sg_xfer.
        let mut segs: Vec<CopySeg> = grefs
            .iter()
            .enumerate()
            .map(|(i, &g)| CopySeg {
                src: CopyPtr::Foreign {
                    domid: MEMBER,
                    gref: g,
                    offset: 0,
                },
                dst: share.local(1 + i, 0).expect("share page"),
                len: PAGE_SIZE as u16,
                status: CopyStatus::Pending,
            })
            .collect();
        let t = Instant::now();
        for _ in 0..COPY_ROUNDS {
            let rep = sg_xfer(o, &mut segs)?;
            assert_eq!(rep.failed, 0);
        }
        let secs = t.elapsed().as_secs_f64();
        let mib = (COPY_ROUNDS * BUF_PAGES * PAGE_SIZE) as f64 / (1 << 20) as f64;
        println!(
            "sg_xfer 4 KiB segments: {:.0} MiB/s ({:.1} us per 4 KiB segment)",
            mib / secs,
            secs * 1e6 / (COPY_ROUNDS * BUF_PAGES) as f64
        );
        for (i, _) in grefs.iter().enumerate() {
            assert_eq!(
                share.mem().read_u8((1 + i) * PAGE_SIZE + 7)?,
                i as u8,
                "copied data"
            );
        }

        // 3. Map + unmap of one granted page.
        let t = Instant::now();
        for _ in 0..MAP_ROUNDS {
            let m = o.map(MEMBER, &grefs[..1], Access::ReadOnly)?;
            o.unmap(m)?;
        }
        println!(
            "map+unmap of one page: {:?}",
            t.elapsed() / MAP_ROUNDS as u32
        );

        share.trigger(o, MEMBER)
    }

    fn member(sock: &str) -> Result<()> {
        let mut p = SimPlatform::connect(sock, MEMBER)?;
        let gref: u32 = std::env::var("XS_BENCH_GREF")
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(Error::InvalidArgument {
                what: "XS_BENCH_GREF",
            })?;
        let mut a = Attached::attach(
            &mut p,
            ShareRef {
                owner: OWNER,
                descriptor: GrantRef(gref),
            },
        )?;
        let bufs = p.alloc_pages(BUF_PAGES)?;
        for i in 0..BUF_PAGES {
            bufs.mem().fill(i * PAGE_SIZE, PAGE_SIZE, i as u8)?;
            let frame = bufs.frame(i).ok_or(Error::OutOfMemory)?;
            let g = p.grant(frame, OWNER, Access::ReadWrite)?;
            a.mem().write_u32(4 * i, g.0)?;
        }
        a.trigger(&mut p)?;
        for _ in 0..ROUND_TRIPS {
            wait_one(&mut p)?;
            a.trigger(&mut p)?;
        }
        // The owner's last trigger: it is done with our buffers.
        wait_one(&mut p)?;
        a.detach(&mut p)
    }
}
