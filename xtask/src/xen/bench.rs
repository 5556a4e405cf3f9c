//! `cargo xtask bench xen`: xen-share's drivers next to Linux's own split
//! drivers on the Xen rig, in one boot (scenario `bench-xen`, not in the
//! test tier). The scenario writes its raw record (`bench.txt`, format in
//! `xen-rig/scenarios/bench-xen.sh`); this file turns it into figures,
//! same-boot ratios and each domain's CPU seconds per GiB moved, writes
//! `target/bench/xen.json` and prints a table.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::util::target_dir;

const SCENARIO: &str = "bench-xen";
const GIB: f64 = (1u64 << 30) as f64;

/// One case of the record: what dom0 saw around one command.
#[derive(Debug, Default, PartialEq)]
pub struct Case {
    pub id: String,
    pub wall_ms: u64,
    /// xl list's Time(s) per domain, before and after.
    pub cpu0: BTreeMap<String, f64>,
    pub cpu1: BTreeMap<String, f64>,
    /// What the command printed.
    pub out: Vec<String>,
    pub status: Option<i32>,
    /// What the receiving side printed afterwards.
    pub extra: Vec<String>,
}

impl Case {
    /// CPU seconds each domain used during the case (domains present
    /// before and after).
    pub fn cpu_delta(&self) -> BTreeMap<String, f64> {
        self.cpu0
            .iter()
            .filter_map(|(d, a)| self.cpu1.get(d).map(|b| (d.clone(), (b - a).max(0.0))))
            .collect()
    }

    fn wall_s(&self) -> f64 {
        self.wall_ms as f64 / 1000.0
    }

    /// The `key=value` figures of the first line (in `out`, then `extra`)
    /// starting with `what `.
    fn figures(&self, what: &str, from_extra: bool) -> Option<BTreeMap<String, f64>> {
        let lines = if from_extra { &self.extra } else { &self.out };
        let prefix = format!("{what} ");
        let line = lines.iter().find(|l| l.starts_with(&prefix))?;
        Some(key_values(&line[prefix.len()..]))
    }
}

/// `a=1 b=2.5` as a map; words that are not `key=number` are skipped.
fn key_values(s: &str) -> BTreeMap<String, f64> {
    s.split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((
                k.to_string(),
                v.parse::<f64>().ok().filter(|v| v.is_finite())?,
            ))
        })
        .collect()
}

/// Parses the scenario's record. A line that fits no rule is an error
/// (the record is dom0's own output, not a guest's).
pub fn parse_record(text: &str) -> Result<Vec<Case>> {
    let mut cases: Vec<Case> = Vec::new();
    let mut open = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        let bad = || format!("bench record line {}: {line:?}", n + 1);
        match tag {
            "case" => {
                if rest.is_empty() || rest.contains(' ') {
                    bail!("{}", bad());
                }
                cases.push(Case {
                    id: rest.to_string(),
                    ..Case::default()
                });
                open = true;
            }
            "extra" => {
                let (id, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let c = cases
                    .iter_mut()
                    .rev()
                    .find(|c| c.id == id)
                    .with_context(bad)?;
                c.extra.push(text.to_string());
            }
            _ => {
                let c = cases.last_mut().filter(|_| open).with_context(bad)?;
                match tag {
                    "wall_ms" => c.wall_ms = rest.parse().ok().with_context(bad)?,
                    "cpu0" | "cpu1" => {
                        let (dom, secs) = rest.split_once(' ').with_context(bad)?;
                        let secs: f64 = secs
                            .trim()
                            .parse()
                            .ok()
                            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                            .with_context(bad)?;
                        let m = if tag == "cpu0" {
                            &mut c.cpu0
                        } else {
                            &mut c.cpu1
                        };
                        m.insert(dom.to_string(), secs);
                    }
                    "out" => c.out.push(rest.to_string()),
                    "end" => {
                        let (id, st) = rest.split_once(' ').with_context(bad)?;
                        if id != c.id {
                            bail!("{}: ends case {id} inside case {}", bad(), c.id);
                        }
                        c.status = Some(st.parse().ok().with_context(bad)?);
                        open = false;
                    }
                    _ => bail!("{}", bad()),
                }
            }
        }
    }
    Ok(cases)
}

/// What one case measured: its headline figure and the bytes it moved.
#[derive(Debug, PartialEq)]
pub struct Measured {
    /// (name, value, unit) of the headline figure.
    pub figure: (&'static str, f64, &'static str),
    /// Payload bytes moved (None: a latency case).
    pub bytes: Option<f64>,
    /// Other figures worth keeping.
    pub more: BTreeMap<String, f64>,
}

/// busybox ping's summary: (avg ms, min, max, transmitted, received).
fn ping_summary(lines: &[String]) -> Option<(f64, f64, f64, f64, f64)> {
    let rt = lines.iter().find_map(|l| {
        let v = l.split("round-trip min/avg/max = ").nth(1)?;
        let v: Vec<f64> = v
            .trim_end_matches(" ms")
            .split('/')
            .map(|x| x.trim().parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 3).then(|| (v[0], v[1], v[2]))
    })?;
    let counts = lines.iter().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            [tx, "packets", "transmitted,", rx, "packets", "received,", ..] => {
                Some((tx.parse().ok()?, rx.parse().ok()?))
            }
            _ => None,
        }
    })?;
    Some((rt.1, rt.0, rt.2, counts.0, counts.1))
}

/// The round trip of each reply busybox ping printed (`time=1.234 ms`).
fn reply_times(lines: &[String]) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .filter(|v: &f64| v.is_finite())
        .collect()
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The figures of a case, by its kind (the id's part after the path).
pub fn measured(c: &Case) -> Result<Measured> {
    if c.status != Some(0) {
        bail!("case {} ended with status {:?}", c.id, c.status);
    }
    let kind = kind_of(&c.id);
    let missing = |what: &str| format!("case {}: no {what} line in {:?}", c.id, c.out);
    Ok(match kind {
        "ping" => {
            let (avg, min, max, tx, rx) =
                ping_summary(&c.out).with_context(|| missing("ping summary"))?;
            // The headline is the median: TCG's pauses put a few replies
            // at hundreds of ms, which the mean follows.
            let med = median(&reply_times(&c.out)).with_context(|| missing("ping reply"))?;
            let more = BTreeMap::from([
                ("rtt_min_ms".into(), min),
                ("rtt_avg_ms".into(), avg),
                ("rtt_max_ms".into(), max),
                ("transmitted".into(), tx),
                ("received".into(), rx),
            ]);
            Measured {
                figure: ("rtt_median", med, "ms"),
                bytes: None,
                more,
            }
        }
        "tcp" => {
            let f = c.figures("tcp", false).with_context(|| missing("tcp"))?;
            let (bytes, secs) = (need(&f, "bytes", &c.id)?, need(&f, "secs", &c.id)?);
            if secs <= 0.0 {
                bail!("case {}: a stream of {bytes} bytes in {secs} s", c.id);
            }
            Measured {
                figure: ("throughput", bytes * 8.0 / secs / 1e6, "Mbit/s"),
                bytes: Some(bytes),
                more: f,
            }
        }
        "udp" => {
            let sink = c
                .figures("udp-sink", true)
                .with_context(|| missing("udp-sink"))?;
            let sent = c
                .figures("udp-send", false)
                .with_context(|| missing("udp-send"))?;
            let mut more: BTreeMap<String, f64> = sink
                .iter()
                .map(|(k, v)| (format!("received_{k}"), *v))
                .collect();
            more.extend(sent.iter().map(|(k, v)| (format!("sent_{k}"), *v)));
            // `ifstat IFACE HOST counters...`: where datagrams were lost.
            for l in &c.extra {
                let mut w = l.splitn(4, ' ');
                if let (Some("ifstat"), Some(iface), Some(host), Some(kv)) =
                    (w.next(), w.next(), w.next(), w.next())
                {
                    more.extend(
                        key_values(kv)
                            .into_iter()
                            .map(|(k, v)| (format!("{host}_{iface}_{k}"), v)),
                    );
                }
            }
            Measured {
                figure: ("received", need(&sink, "pps", &c.id)? / 1000.0, "kpps"),
                bytes: Some(need(&sink, "bytes", &c.id)?),
                more,
            }
        }
        "rand-read" | "rand-write" => {
            let f = c.figures("disk", false).with_context(|| missing("disk"))?;
            Measured {
                figure: ("iops", need(&f, "iops", &c.id)?, "IOPS"),
                bytes: Some(need(&f, "bytes", &c.id)?),
                more: f,
            }
        }
        "seq-read" | "seq-write" => {
            let f = c.figures("disk", false).with_context(|| missing("disk"))?;
            Measured {
                figure: ("throughput", need(&f, "mib_s", &c.id)?, "MiB/s"),
                bytes: Some(need(&f, "bytes", &c.id)?),
                more: f,
            }
        }
        k => bail!("case {}: unknown kind {k}", c.id),
    })
}

fn need(f: &BTreeMap<String, f64>, k: &str, id: &str) -> Result<f64> {
    f.get(k)
        .copied()
        .with_context(|| format!("case {id}: no {k}= figure"))
}

/// `xensnet-tcp` -> `tcp`, `blkfront-rand-read` -> `rand-read`.
fn kind_of(id: &str) -> &str {
    id.split_once('-').map_or(id, |(_, k)| k)
}

fn path_of(id: &str) -> &str {
    id.split_once('-').map_or("", |(p, _)| p)
}

/// Our path and Linux's for each kind of case, and whose CPU is "the
/// backend" on each.
const PAIRS: &[(&str, &str, &str, &str)] = &[
    ("xensnet", "netfront", "netback-uk", "Domain-0"),
    ("xensblk", "blkfront", "blkback-uk", "Domain-0"),
];

/// CPU seconds per second each domain used while the bench was idle.
pub fn idle_rates(cases: &[Case]) -> BTreeMap<String, f64> {
    cases
        .iter()
        .find(|c| c.id == "idle" && c.wall_ms > 0)
        .map(|c| {
            c.cpu_delta()
                .into_iter()
                .map(|(d, s)| (d, s / c.wall_s()))
                .collect()
        })
        .unwrap_or_default()
}

/// A domain's CPU seconds in a case less what it would have used idle.
fn net_of_idle(c: &Case, idle: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    c.cpu_delta()
        .into_iter()
        .map(|(d, s)| {
            let base = idle.get(&d).copied().unwrap_or(0.0) * c.wall_s();
            (d, (s - base).max(0.0))
        })
        .collect()
}

fn per_gib(cpu: &BTreeMap<String, f64>, bytes: f64) -> BTreeMap<String, f64> {
    cpu.iter()
        .map(|(d, s)| (d.clone(), if bytes > 0.0 { s / (bytes / GIB) } else { 0.0 }))
        .collect()
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        (v * 10.0).round() / 10.0
    } else {
        (v * 1000.0).round() / 1000.0
    }
}

fn rounded(m: &BTreeMap<String, f64>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), json!(round(*v))))
            .collect(),
    )
}

/// A comparison row: one kind, our path against Linux's.
#[derive(Debug, PartialEq)]
pub struct Row {
    pub kind: String,
    pub unit: &'static str,
    pub ours: f64,
    pub linux: f64,
    /// CPU s/GiB of our backend, of dom0 on our path and on Linux's path
    /// (raw: with each domain's background during the case; see
    /// [`report`]).
    pub our_backend: Option<f64>,
    pub dom0_for_ours: Option<f64>,
    pub linux_dom0: Option<f64>,
    /// Every domain's CPU s/GiB added up (raw).
    pub ours_total: Option<f64>,
    pub linux_total: Option<f64>,
}

/// The JSON document and the comparison rows. The rows' CPU figures are
/// raw (an upper bound: a domain's background is in them): on the rig the
/// background is not constant (dom0 used 0.6-0.8 CPU s/s in the idle case
/// and less while the domUs competed for TCG's two host threads), so
/// subtracting the idle rate removes too much; the cases keep both.
pub fn report(cases: &[Case], rig: &str, load: &[String]) -> Result<(Value, Vec<Row>)> {
    let idle = idle_rates(cases);
    let mut json_cases = Vec::new();
    let mut by_id: BTreeMap<&str, (Measured, BTreeMap<String, f64>)> = BTreeMap::new();
    for c in cases.iter().filter(|c| c.id != "idle") {
        let m = measured(c)?;
        let net = net_of_idle(c, &idle);
        let mut j = json!({
            "id": c.id,
            "path": path_of(&c.id),
            "kind": kind_of(&c.id),
            "wall_s": round(c.wall_s()),
            m.figure.0: round(m.figure.1),
            "unit": m.figure.2,
            "figures": rounded(&m.more),
            "cpu_s": rounded(&c.cpu_delta()),
            "cpu_s_net_of_idle": rounded(&net),
        });
        if let Some(b) = m.bytes {
            j["bytes"] = json!(b);
            j["cpu_s_per_gib"] = rounded(&per_gib(&c.cpu_delta(), b));
            j["cpu_s_per_gib_net_of_idle"] = rounded(&per_gib(&net, b));
        }
        json_cases.push(j);
        by_id.insert(&c.id, (m, c.cpu_delta()));
    }
    let mut rows = Vec::new();
    for (ours_path, linux_path, backend, dom0) in PAIRS {
        let kinds: Vec<&str> = cases
            .iter()
            .filter(|c| path_of(&c.id) == *ours_path)
            .map(|c| kind_of(&c.id))
            .collect();
        for kind in kinds {
            let (Some((o, ocpu)), Some((l, lcpu))) = (
                by_id.get(format!("{ours_path}-{kind}").as_str()),
                by_id.get(format!("{linux_path}-{kind}").as_str()),
            ) else {
                continue;
            };
            let g = |cpu: &BTreeMap<String, f64>, m: &Measured, d: &str| {
                m.bytes
                    .filter(|b| *b > 0.0)
                    .map(|b| cpu.get(d).copied().unwrap_or(0.0) / (b / GIB))
            };
            let total = |cpu: &BTreeMap<String, f64>, m: &Measured| {
                m.bytes
                    .filter(|b| *b > 0.0)
                    .map(|b| cpu.values().sum::<f64>() / (b / GIB))
            };
            rows.push(Row {
                kind: format!("{ours_path}/{linux_path} {kind}"),
                unit: o.figure.2,
                ours: o.figure.1,
                linux: l.figure.1,
                our_backend: g(ocpu, o, backend),
                dom0_for_ours: g(ocpu, o, dom0),
                linux_dom0: g(lcpu, l, dom0),
                ours_total: total(ocpu, o),
                linux_total: total(lcpu, l),
            });
        }
    }
    let comparisons: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "what": r.kind,
                "unit": r.unit,
                "ours": round(r.ours),
                "linux": round(r.linux),
                "ours_over_linux": if r.linux > 0.0 { json!(round(r.ours / r.linux)) } else { Value::Null },
                "our_backend_cpu_s_per_gib": r.our_backend.map(round),
                "dom0_cpu_s_per_gib_on_our_path": r.dom0_for_ours.map(round),
                "dom0_cpu_s_per_gib_on_linux_path": r.linux_dom0.map(round),
                "all_domains_cpu_s_per_gib_ours": r.ours_total.map(round),
                "all_domains_cpu_s_per_gib_linux": r.linux_total.map(round),
            })
        })
        .collect();
    let doc = json!({
        "bench": "xen",
        "rig": rig,
        "host_load": load,
        "note": "TCG-nested Xen: absolute figures say nothing about hardware; compare within the boot. \
                 CPU seconds are xl list's Time(s) around each case; net_of_idle subtracts each \
                 domain's rate in the idle case over the case's wall time (too much where a \
                 domain's background shrank under load: TCG shares two host threads); the \
                 comparisons use the raw figures, an upper bound.",
        "idle_cpu_s_per_s": rounded(&idle),
        "cases": json_cases,
        "comparisons": comparisons,
    });
    Ok((doc, rows))
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// The table printed after a run.
pub fn table(rows: &[Row]) -> String {
    let line = |c: [&str; 10]| {
        format!(
            "{:<28} {:>8} {:>8} {:<7} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]
        )
    };
    let mut s = line([
        "case (ours/Linux's)",
        "ours",
        "Linux",
        "unit",
        "ratio",
        "our bk/G",
        "dom0/G o",
        "dom0/G L",
        "all/G o",
        "all/G L",
    ]);
    for r in rows {
        let ratio = if r.linux > 0.0 {
            format!("{:.2}", r.ours / r.linux)
        } else {
            "-".into()
        };
        s.push_str(&line([
            &r.kind,
            &format!("{:.1}", r.ours),
            &format!("{:.1}", r.linux),
            r.unit,
            &ratio,
            &opt(r.our_backend),
            &opt(r.dom0_for_ours),
            &opt(r.linux_dom0),
            &opt(r.ours_total),
            &opt(r.linux_total),
        ]));
    }
    s.push_str(
        "(ratio: ours / Linux's; for latency lower is better. */G: CPU seconds per GiB moved, raw \
         (background included): our backend, dom0 on our path, dom0 on Linux's path, every domain \
         on ours, on Linux's)\n",
    );
    s
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// Reads a record, writes the JSON, prints the table.
fn finish(record: &Path, rig: &str, load: &[String], json_path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(record)
        .with_context(|| format!("reading the bench record {}", record.display()))?;
    let cases = parse_record(&text)?;
    if cases.is_empty() {
        bail!("the bench record {} holds no case", record.display());
    }
    let (doc, rows) = report(&cases, rig, load)?;
    std::fs::create_dir_all(json_path.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(json_path, serde_json::to_string_pretty(&doc)? + "\n")?;
    eprint!("{}", table(&rows));
    eprintln!("bench xen: wrote {}", json_path.display());
    Ok(())
}

/// `cargo xtask bench xen`: boots the rig once with the bench scenario,
/// or (`from`) reads a record a run kept.
pub fn run(
    rel: &'static super::setup::Release,
    timeout: u64,
    verbose: bool,
    from: Option<PathBuf>,
) -> Result<()> {
    let json_path = target_dir().join("bench").join("xen.json");
    if let Some(record) = from {
        let load = vec![format!("(re-read from {})", record.display())];
        return finish(&record, &rel.describe(), &load, &json_path);
    }
    let (s, images) = super::prepare_for(rel, false)?;
    let before = loadavg();
    let r = super::run_prepared(&s, &images, SCENARIO, Duration::from_secs(timeout), verbose);
    let load = vec![
        format!("host /proc/loadavg before the boot: {before}"),
        format!("host /proc/loadavg after it: {}", loadavg()),
    ];
    let record = super::logs_dir_for(rel, SCENARIO).join("bench.txt");
    match r {
        Ok(()) => finish(&record, &s.describe(), &load, &json_path),
        Err(e) => {
            // Whatever cases finished are still worth seeing.
            if record.exists() {
                let _ = finish(&record, &s.describe(), &load, &json_path);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = "\
case idle
wall_ms 10000
cpu0 Domain-0 100.0
cpu0 netback-uk 10.0
cpu0 bx-a 20.0
cpu1 Domain-0 102.0
cpu1 netback-uk 11.0
cpu1 bx-a 20.5
out 
end idle 0
case xensnet-tcp
wall_ms 5000
cpu0 Domain-0 102.0
cpu0 netback-uk 11.0
cpu0 bx-a 20.5
cpu1 Domain-0 104.0
cpu1 netback-uk 14.5
cpu1 bx-a 25.5
out tcp bytes=536870912 secs=4.000 mbit_s=1073.742
end xensnet-tcp 0
extra xensnet-tcp tcp-sink bytes=536870912 secs=3.900
case netfront-tcp
wall_ms 5000
cpu0 Domain-0 104.0
cpu0 netback-uk 14.5
cpu0 bx-a 25.5
cpu1 Domain-0 110.0
cpu1 netback-uk 15.0
cpu1 bx-a 30.5
out tcp bytes=268435456 secs=4.000 mbit_s=536.871
end netfront-tcp 0
case xensnet-ping
wall_ms 4000
cpu0 Domain-0 1
cpu1 Domain-0 2
out PING 10.77.0.3 (10.77.0.3): 56 data bytes
out 64 bytes from 10.77.0.3: seq=0 ttl=64 time=2.345 ms
out 20 packets transmitted, 20 packets received, 0% packet loss
out round-trip min/avg/max = 1.000/2.500/4.000 ms
end xensnet-ping 0
case xensnet-udp
wall_ms 6000
cpu0 Domain-0 1
cpu1 Domain-0 2
out udp-send packets=1000 secs=5.000 pps=200.000 errors=0
end xensnet-udp 0
extra xensnet-udp udp-sink packets=900 bytes=57600 secs=4.500 pps=200.000 ended=1
extra xensnet-udp ifstat xsn0 bx-b rx_packets=950 rx_dropped=50 tx_packets=3 tx_dropped=0
";

    #[test]
    fn record_parses() {
        let cases = parse_record(RECORD).unwrap();
        assert_eq!(cases.len(), 5);
        let tcp = &cases[1];
        assert_eq!(tcp.id, "xensnet-tcp");
        assert_eq!(tcp.wall_ms, 5000);
        assert_eq!(tcp.status, Some(0));
        assert_eq!(tcp.extra, ["tcp-sink bytes=536870912 secs=3.900"]);
        let d = tcp.cpu_delta();
        assert_eq!(d["Domain-0"], 2.0);
        assert_eq!(d["netback-uk"], 3.5);
        assert_eq!(d["bx-a"], 5.0);
        assert_eq!(cases[0].out, [""]);
    }

    #[test]
    fn bad_records_are_refused() {
        for bad in [
            "wall_ms 5\n",
            "case a\nwall_ms x\n",
            "case a\ncpu0 Domain-0\n",
            "case a\ncpu0 Domain-0 -1\n",
            "case a\ncpu0 Domain-0 inf\n",
            "case a\nend b 0\n",
            "case a\nend a zero\n",
            "case a\nend a 0\nout late\n",
            "extra nowhere x\n",
            "case two words\n",
            "surprise\n",
        ] {
            assert!(parse_record(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn figures_of_each_kind() {
        let cases = parse_record(RECORD).unwrap();
        let tcp = measured(&cases[1]).unwrap();
        assert_eq!(tcp.figure.0, "throughput");
        assert!((tcp.figure.1 - 1073.741824).abs() < 1e-6);
        assert_eq!(tcp.bytes, Some(536870912.0));
        let ping = measured(&cases[3]).unwrap();
        assert_eq!(ping.figure, ("rtt_median", 2.345, "ms"));
        assert_eq!(ping.more["rtt_avg_ms"], 2.5);
        assert_eq!(ping.bytes, None);
        assert_eq!(ping.more["received"], 20.0);
        let udp = measured(&cases[4]).unwrap();
        assert_eq!(udp.figure, ("received", 0.2, "kpps"));
        assert_eq!(udp.bytes, Some(57600.0));
        assert_eq!(udp.more["sent_packets"], 1000.0);
        assert_eq!(udp.more["bx-b_xsn0_rx_dropped"], 50.0);
    }

    #[test]
    fn a_failed_or_silent_case_is_an_error() {
        let mut c = parse_record(RECORD).unwrap().remove(1);
        c.status = Some(1);
        assert!(measured(&c).is_err());
        c.status = Some(0);
        c.out = vec!["rig-bench: connect 10.77.0.3:5001: refused".into()];
        assert!(measured(&c).is_err());
        c.id = "xensnet-teleport".into();
        assert!(measured(&c).is_err());
    }

    #[test]
    fn cpu_per_gib() {
        let cases = parse_record(RECORD).unwrap();
        let idle = idle_rates(&cases);
        assert!((idle["Domain-0"] - 0.2).abs() < 1e-9);
        assert!((idle["netback-uk"] - 0.1).abs() < 1e-9);
        let (doc, rows) = report(&cases, "rig", &["load".into()]).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let r = &rows[0];
        assert_eq!(r.kind, "xensnet/netfront tcp");
        assert!((r.ours / r.linux - 2.0).abs() < 1e-3);
        // netback-uk: 3.5 s for 0.5 GiB.
        assert!((r.our_backend.unwrap() - 7.0).abs() < 1e-9);
        // dom0 on Linux's path: 6 s for 0.25 GiB.
        assert!((r.linux_dom0.unwrap() - 24.0).abs() < 1e-9);
        // dom0 on ours: 2 s for 0.5 GiB.
        assert!((r.dom0_for_ours.unwrap() - 4.0).abs() < 1e-9);
        // All: dom0 2 + netback-uk 3.5 + bx-a 5 = 10.5 s / 0.5 GiB.
        assert!((r.ours_total.unwrap() - 21.0).abs() < 1e-9);
        // Net of idle, in the case: netback-uk 3.5 - 0.1 x 5 = 3 s, 6 s/GiB.
        assert_eq!(
            doc["cases"][0]["cpu_s_per_gib_net_of_idle"]["netback-uk"],
            json!(6.0)
        );
        let c = &doc["comparisons"][0];
        assert_eq!(c["ours_over_linux"], json!(2.0));
        assert_eq!(doc["cases"][0]["id"], "xensnet-tcp");
        assert_eq!(doc["cases"][0]["cpu_s_per_gib"]["netback-uk"], json!(7.0));
        assert!(table(&rows).contains("xensnet/netfront tcp"));
    }

    #[test]
    fn guest_written_text_is_only_data() {
        // `out` and `extra` lines carry what a domU printed: odd text
        // there is kept or refused, never a panic.
        let rec = "case xensnet-tcp\nwall_ms 1\nout tcp bytes=\u{e9}\u{e9} secs=0 \u{1f600}=1\n\
                   out tcp bytes=5 secs=0\nout round-trip min/avg/max = /// ms\nend xensnet-tcp 0\n\
                   extra xensnet-tcp \u{e9}ifstat\u{e9} \u{e9}\n";
        let cases = parse_record(rec).unwrap();
        assert!(measured(&cases[0]).is_err());
        let mut c = parse_record(rec).unwrap().remove(0);
        c.id = "xensnet-ping".into();
        assert!(measured(&c).is_err());
        c.id = "xensnet-udp".into();
        assert!(measured(&c).is_err());
        assert_eq!(
            key_values("a=1 =2 b= c=x d=inf e=-3"),
            BTreeMap::from([
                ("a".to_string(), 1.0),
                (String::new(), 2.0),
                ("e".to_string(), -3.0),
            ])
        );
    }

    #[test]
    fn median_of_replies() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = reply_times(&l(&[
            "64 bytes from 10.77.0.3: seq=0 ttl=64 time=9.000 ms",
            "64 bytes from 10.77.0.3: seq=1 ttl=64 time=1.000 ms",
            "64 bytes from 10.77.0.3: seq=2 ttl=64 time=3.500 ms",
            "64 bytes from 10.77.0.3: seq=3 ttl=64 time=2.500 ms",
            "round-trip min/avg/max = 1.000/4.000/9.000 ms",
        ]));
        assert_eq!(t, [9.0, 1.0, 3.5, 2.5]);
        assert_eq!(median(&t), Some(3.0));
        assert_eq!(median(&t[..3]), Some(3.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ping_summary_needs_both_lines() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ping_summary(&l(&[
                "3 packets transmitted, 2 packets received, 33% packet loss",
                "round-trip min/avg/max = 0.1/0.2/0.3 ms"
            ])),
            Some((0.2, 0.1, 0.3, 3.0, 2.0))
        );
        assert_eq!(
            ping_summary(&l(&["round-trip min/avg/max = 0.1/0.2/0.3 ms"])),
            None
        );
        assert_eq!(
            ping_summary(&l(&[
                "3 packets transmitted, 0 packets received, 100% packet loss",
                "round-trip min/avg/max = 0.1/x/0.3 ms"
            ])),
            None
        );
    }
}
