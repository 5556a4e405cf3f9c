//! `cargo xtask xen run SCENARIO`: boot Xen + dom0 in QEMU, follow the
//! scenario's markers on the serial console, keep every log.
//!
//! The marker grammar (one per line, each line starting with `@@`) is
//! documented in `xen-rig/README.md`.
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::image::Images;
use super::setup::{self, Setup};
use crate::util::target_dir;

/// QEMU start to `@@RIG READY` (measured 8 s on 2 TCG cores).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Slack over a step's own timeout: dom0 kills the step itself and reports
/// FAIL; the host only steps in when dom0 cannot.
const STEP_GRACE: Duration = Duration::from_secs(30);
/// Silence allowed outside a step (between steps, while logs are handed
/// over) before the host gives up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time QEMU gets to exit after dom0 said it is done.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Options {
    pub scenario: String,
    /// Pass only if the scenario fails at exactly this step.
    pub expect_fail: Option<String>,
    /// Upper bound for the whole run.
    pub timeout: Duration,
    /// Echo the whole serial console.
    pub verbose: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C and SIGTERM only set a flag: the run loop then returns an error and
/// the QEMU guard's Drop kills QEMU.
fn install_interrupt_handler() {
    static ONCE: Once = Once::new();
    static ERR: OnceLock<String> = OnceLock::new();
    ONCE.call_once(|| {
        if let Err(e) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)) {
            let _ = ERR.set(e.to_string());
            eprintln!("xen run: cannot catch Ctrl-C ({e}); QEMU may outlive an interrupted run");
        }
    });
}

/// Owns the QEMU process: killed (with its process group) on every way out.
struct QemuGuard {
    child: Child,
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // QEMU runs in its own process group whose id is its pid.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One parsed marker.
#[derive(Debug, PartialEq, Eq)]
enum Marker<'a> {
    RigBoot,
    RigReady,
    RigFail(&'a str),
    RigDone,
    ScenarioEnd(i32),
    StepBegin {
        name: &'a str,
        timeout_s: u64,
    },
    StepOk {
        name: &'a str,
        ms: u64,
    },
    StepFail {
        name: &'a str,
        rc: i32,
        ms: u64,
    },
    StepTimeout(&'a str),
    /// What a step shows the user: the command as typed, its evidence.
    Say(&'a str),
    FileBegin(&'a str),
    FileLine(&'a str, &'a str),
    FileEnd(&'a str),
}

/// The marker in `line`, if any. Only dom0 starts a serial line with `@@`:
/// Xen prefixes what a guest prints there (`(d1) `), so a guest cannot
/// forge a marker. Malformed markers (a line cut by other output) are
/// ignored rather than misread.
fn parse_marker(line: &str) -> Option<Marker<'_>> {
    let rest = line.trim_start().strip_prefix("@@")?;
    let rest = rest.trim_end_matches(['\r', '\n']);
    if let Some(f) = rest.strip_prefix("F ") {
        let (name, text) = f.split_once('|')?;
        return Some(Marker::FileLine(name, text));
    }
    if let Some(text) = rest.strip_prefix("SAY ") {
        return Some(Marker::Say(text.trim_end()));
    }
    let w: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok());
    let int = |i: usize| w.get(i).and_then(|s| s.parse::<i32>().ok());
    Some(match w.as_slice() {
        ["RIG", "BOOT"] => Marker::RigBoot,
        ["RIG", "READY"] => Marker::RigReady,
        ["RIG", "DONE"] => Marker::RigDone,
        ["RIG", "FAIL", ..] => Marker::RigFail(rest["RIG FAIL".len()..].trim()),
        ["SCENARIO", _, "END", _] => Marker::ScenarioEnd(int(3)?),
        ["STEP", name, "BEGIN", _] => Marker::StepBegin {
            name,
            timeout_s: num(3)?,
        },
        ["STEP", name, "OK", "0", _] => Marker::StepOk { name, ms: num(4)? },
        ["STEP", name, "FAIL", _, _] => Marker::StepFail {
            name,
            rc: int(3)?,
            ms: num(4)?,
        },
        ["STEP", name, "TIMEOUT"] => Marker::StepTimeout(name),
        ["FILE", name, "BEGIN"] => Marker::FileBegin(name),
        ["FILE", name, "END"] => Marker::FileEnd(name),
        _ => return None,
    })
}

/// A log name from dom0 made safe as a file name in the logs directory.
fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// The logs directory of a scenario on `rel`'s rig:
/// `target/xen-logs/SCENARIO` for the default release,
/// `target/xen-logs/debian-N/SCENARIO` for another.
pub fn logs_dir_for(rel: &setup::Release, scenario: &str) -> PathBuf {
    let base = target_dir().join("xen-logs");
    let base = if rel.number == setup::DEFAULT_RELEASE.number {
        base
    } else {
        base.join(format!("debian-{}", rel.number))
    };
    base.join(safe_name(scenario))
}

fn plain_path(p: &Path) -> Result<String> {
    let s = p.display().to_string();
    if s.contains(',') || s.contains(' ') {
        bail!("{s}: QEMU's multiboot module list cannot hold a path with ',' or ' '");
    }
    Ok(s)
}

struct Step {
    name: String,
    ok: bool,
    ms: u64,
    /// What the step said (`@@SAY`): its commands and evidence.
    said: Vec<String>,
}

/// Boots and runs `opts.scenario`; Ok when it passed (or failed exactly as
/// `expect_fail` says).
pub fn run(setup: &Setup, images: &Images, opts: &Options) -> Result<()> {
    install_interrupt_handler();
    let logs = logs_dir_for(setup.release, &opts.scenario);
    if logs.exists() {
        fs::remove_dir_all(&logs)?;
    }
    fs::create_dir_all(&logs)?;

    let dom0_cmdline = format!(
        "console=hvc0 earlyprintk=xen rig.scenario={}",
        opts.scenario
    );
    let mut cmd = setup.qemu.command();
    cmd.args(["-accel", "tcg,thread=multi"])
        .args(["-cpu", "qemu64,+svm,+npt"])
        .args(["-smp", "2", "-m", "3072", "-machine", "q35"])
        .args(["-nic", "none", "-display", "none", "-no-reboot"])
        .args(["-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&setup.xen_elf)
        .args([
            "-append",
            "console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all \
             dom0_mem=1024M,max:1024M dom0_max_vcpus=2 noreboot",
        ])
        .arg("-initrd")
        .arg(format!(
            "{} {dom0_cmdline},{}",
            plain_path(&setup.vmlinuz)?,
            plain_path(&images.dom0)?
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);

    eprintln!(
        "xen run {}: booting Xen + dom0 in QEMU ({})",
        opts.scenario,
        setup.describe()
    );
    let start = Instant::now();
    let child = cmd.spawn().context("starting QEMU")?;
    let mut guard = QemuGuard { child };

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = guard.child.stdout.take().context("QEMU stdout")?;
    let serial_path = logs.join("serial.log");
    let mut serial = File::create(&serial_path)?;
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = serial.write_all(&buf);
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = guard.child.stderr.take().context("QEMU stderr")?;
    let stderr_path = logs.join("qemu-stderr.log");
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        let _ = fs::write(stderr_path, &s);
    });

    let result = follow(&rx, &logs, opts, start);
    // Whatever happened, QEMU goes now (a no-op when it powered off).
    drop(guard);
    let _ = reader.join();
    let _ = err_thread.join();
    let total = start.elapsed().as_secs_f64();
    let outcome = result?;

    let mut summary = format!("rig: {}\n", setup.describe());
    if let Some(r) = outcome.ready {
        summary.push_str(&format!(
            "QEMU start to dom0 ready: {:.1} s\n",
            r.as_secs_f64()
        ));
    }
    for s in &outcome.steps {
        summary.push_str(&format!(
            "step {}: {} in {:.1} s\n",
            s.name,
            if s.ok { "ok" } else { "FAILED" },
            s.ms as f64 / 1000.0
        ));
        for l in &s.said {
            summary.push_str(&format!("    {l}\n"));
        }
    }
    summary.push_str(&format!("total (QEMU start to exit): {total:.1} s\n"));
    fs::write(logs.join("summary.txt"), &summary)?;

    let where_logs = format!("logs in {}", logs.display());
    match (&outcome.failure, &opts.expect_fail) {
        (None, None) => {
            eprintln!(
                "xen run {}: PASSED in {total:.1} s ({} steps; {where_logs})",
                opts.scenario,
                outcome.steps.len()
            );
            Ok(())
        }
        (Some(f), None) => Err(anyhow!(
            "scenario {} failed: {f}; {where_logs}",
            opts.scenario
        )),
        (None, Some(want)) => Err(anyhow!(
            "scenario {} passed but was expected to fail at step {want}; {where_logs}",
            opts.scenario
        )),
        (Some(f), Some(want)) => {
            let at_step = outcome.failed_step.as_deref() == Some(want.as_str());
            // The failure path must still hand over the guest consoles.
            let guest_logs = fs::read_dir(&logs)?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("guest-"))
                .count();
            if at_step && guest_logs > 0 && outcome.logs_received {
                eprintln!(
                    "xen run {}: failed as expected ({f}); {guest_logs} guest console log(s) kept; {where_logs}",
                    opts.scenario
                );
                Ok(())
            } else {
                Err(anyhow!(
                    "scenario {} was expected to fail at step {want} with its logs kept, \
                     but: {f} (guest logs kept: {guest_logs}, log hand-over complete: {}); {where_logs}",
                    opts.scenario,
                    outcome.logs_received
                ))
            }
        }
    }
}

struct Outcome {
    ready: Option<Duration>,
    steps: Vec<Step>,
    /// What went wrong, naming the step; None when the scenario passed.
    failure: Option<String>,
    failed_step: Option<String>,
    /// dom0 finished handing over its logs (`@@RIG DONE`).
    logs_received: bool,
}

/// Follows the console until dom0 is done or a deadline passes. Errors only
/// for host-side trouble; scenario failures are in the Outcome.
fn follow(
    rx: &mpsc::Receiver<String>,
    logs: &Path,
    opts: &Options,
    start: Instant,
) -> Result<Outcome> {
    let overall = start + opts.timeout;
    let mut out = Outcome {
        ready: None,
        steps: Vec::new(),
        failure: None,
        failed_step: None,
        logs_received: false,
    };
    // (what we wait for, until when)
    let mut waiting: (String, Instant) = ("dom0 ready".into(), start + BOOT_TIMEOUT);
    let mut step: Option<(String, Instant, Vec<String>)> = None;
    // What the current step said so far.
    let mut said: Vec<String> = Vec::new();
    let mut file: Option<(String, File)> = None;
    let mut done_at: Option<Instant> = None;
    let stamp = |t: Instant| format!("[{:6.1} s]", t.duration_since(start).as_secs_f64());

    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!(
                "interrupted; QEMU killed; logs so far in {}",
                logs.display()
            );
        }
        let now = Instant::now();
        let deadline = waiting.1.min(overall);
        if now >= deadline {
            if done_at.is_some() {
                // dom0 finished; QEMU just did not power off by itself.
                return Ok(out);
            }
            let what = if now >= overall {
                format!(
                    "the whole run exceeded {} s while waiting for {}",
                    opts.timeout.as_secs(),
                    waiting.0
                )
            } else {
                format!("timed out waiting for {}", waiting.0)
            };
            if out.failure.is_none() {
                out.failure = Some(what);
                out.failed_step = step.as_ref().map(|s| s.0.clone());
            }
            if let Some((name, _, lines)) = &step {
                print_tail(name, lines);
            }
            return Ok(out);
        }
        let line = match rx.recv_timeout((deadline - now).min(Duration::from_millis(250))) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                if done_at.is_none() && out.failure.is_none() {
                    out.failure = Some(format!(
                        "QEMU exited while waiting for {} (see serial.log, qemu-stderr.log)",
                        waiting.0
                    ));
                    out.failed_step = step.as_ref().map(|s| s.0.clone());
                }
                return Ok(out);
            }
        };
        if opts.verbose {
            eprint!("    | {line}");
        }
        let now = Instant::now();
        // Fatal console lines end the run at once instead of at a timeout.
        for fatal in ["Panic on CPU", "Kernel panic - not syncing"] {
            if line.contains(fatal) && out.failure.is_none() {
                out.failure = Some(format!("{}: {}", waiting.0, line.trim()));
                out.failed_step = step.as_ref().map(|s| s.0.clone());
                waiting = ("exit after a panic".into(), now + Duration::from_secs(5));
            }
        }
        let Some(marker) = parse_marker(&line) else {
            if let Some((_, _, lines)) = &mut step {
                if !line.starts_with("(XEN)") {
                    lines.push(line.trim_end().to_string());
                }
            }
            continue;
        };
        match marker {
            Marker::RigBoot => eprintln!("{} dom0 init running", stamp(now)),
            Marker::RigReady => {
                out.ready = Some(now - start);
                eprintln!(
                    "{} dom0 ready (xenstored, xenconsoled, modules)",
                    stamp(now)
                );
                waiting = ("the scenario's first step".into(), now + IDLE_TIMEOUT);
            }
            Marker::RigFail(why) => {
                eprintln!("{} dom0 FAILED: {why}", stamp(now));
                out.failure = Some(format!("dom0 setup failed: {why}"));
                waiting = ("dom0's logs".into(), now + IDLE_TIMEOUT);
            }
            Marker::StepBegin { name, timeout_s } => {
                eprintln!("{} step {name} (timeout {timeout_s} s) ...", stamp(now));
                let until = now + Duration::from_secs(timeout_s) + STEP_GRACE;
                waiting = (format!("step {name}"), until);
                step = Some((name.to_string(), until, Vec::new()));
                said.clear();
            }
            Marker::StepOk { name, ms } => {
                eprintln!(
                    "{} step {name}: ok in {:.1} s",
                    stamp(now),
                    ms as f64 / 1000.0
                );
                out.steps.push(Step {
                    name: name.to_string(),
                    ok: true,
                    ms,
                    said: std::mem::take(&mut said),
                });
                step = None;
                waiting = ("the next step".into(), now + IDLE_TIMEOUT);
            }
            Marker::StepFail { name, rc, ms } => {
                eprintln!(
                    "{} step {name}: FAILED (exit status {rc}) after {:.1} s",
                    stamp(now),
                    ms as f64 / 1000.0
                );
                if let Some((_, _, lines)) = &step {
                    print_tail(name, lines);
                }
                out.steps.push(Step {
                    name: name.to_string(),
                    ok: false,
                    ms,
                    said: std::mem::take(&mut said),
                });
                if out.failure.is_none() {
                    out.failure = Some(format!("step {name} failed with exit status {rc}"));
                    out.failed_step = Some(name.to_string());
                }
                step = None;
                waiting = ("the scenario's end".into(), now + IDLE_TIMEOUT);
            }
            Marker::StepTimeout(name) => {
                eprintln!("{} step {name}: timed out in dom0, killed", stamp(now));
                out.failure = Some(format!("step {name} exceeded its timeout"));
                out.failed_step = Some(name.to_string());
            }
            Marker::ScenarioEnd(rc) => {
                eprintln!(
                    "{} scenario ended (status {rc}); collecting logs",
                    stamp(now)
                );
                if rc != 0 && out.failure.is_none() {
                    out.failure = Some(format!("scenario script exited {rc} outside any step"));
                }
                waiting = ("dom0's logs".into(), now + IDLE_TIMEOUT);
            }
            Marker::Say(text) => {
                eprintln!("{}     {text}", stamp(now));
                if step.is_some() {
                    said.push(text.to_string());
                }
            }
            Marker::FileBegin(name) => {
                let f = File::create(logs.join(safe_name(name)))?;
                file = Some((name.to_string(), f));
                waiting.1 = now + IDLE_TIMEOUT;
            }
            Marker::FileLine(name, text) => {
                if let Some((n, f)) = &mut file {
                    if n == name {
                        writeln!(f, "{}", text.trim_end_matches('\r'))?;
                    }
                }
            }
            Marker::FileEnd(_) => file = None,
            Marker::RigDone => {
                out.logs_received = true;
                done_at = Some(now);
                eprintln!("{} dom0 handed over its logs; powering off", stamp(now));
                waiting = ("QEMU to exit".into(), now + EXIT_TIMEOUT);
            }
        }
    }
}

/// The last console lines of a step, to show why it failed.
fn print_tail(name: &str, lines: &[String]) {
    let from = lines.len().saturating_sub(30);
    if lines.is_empty() {
        return;
    }
    eprintln!("    --- last console lines of step {name} ---");
    for l in &lines[from..] {
        eprintln!("    | {l}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse() {
        assert_eq!(
            parse_marker("@@STEP boot-pv BEGIN 180\r\r\n"),
            Some(Marker::StepBegin {
                name: "boot-pv",
                timeout_s: 180
            })
        );
        assert_eq!(
            parse_marker("@@STEP x FAIL 3 1234"),
            Some(Marker::StepFail {
                name: "x",
                rc: 3,
                ms: 1234
            })
        );
        assert_eq!(
            parse_marker("@@STEP x OK 0 17"),
            Some(Marker::StepOk { name: "x", ms: 17 })
        );
        assert_eq!(
            parse_marker("@@F guest-a.log|a | b"),
            Some(Marker::FileLine("guest-a.log", "a | b"))
        );
        assert_eq!(
            parse_marker("@@RIG FAIL modprobe xenfs"),
            Some(Marker::RigFail("modprobe xenfs"))
        );
        assert_eq!(
            parse_marker("@@SCENARIO smoke END 0"),
            Some(Marker::ScenarioEnd(0))
        );
        assert_eq!(
            parse_marker("@@SAY $ vdevice --create net 0 guest1 guest2 -> net0\r"),
            Some(Marker::Say(
                "$ vdevice --create net 0 guest1 guest2 -> net0"
            ))
        );
        assert_eq!(parse_marker("(d3) @@SAY forged"), None);
    }

    #[test]
    fn cut_markers_are_ignored() {
        // A kernel message that split a marker line leaves a fragment that
        // must not be mistaken for a result.
        assert_eq!(parse_marker("@@STEP x OK"), None);
        assert_eq!(parse_marker("@@STEP x FAIL [  12.3] xen"), None);
        assert_eq!(parse_marker("@@STEP x BEGIN"), None);
        assert_eq!(parse_marker("no marker here"), None);
        // What a guest prints to Xen's console comes with Xen's prefix.
        assert_eq!(parse_marker("(d1) @@STEP x OK 0 5"), None);
        assert_eq!(parse_marker("(XEN) @@RIG DONE"), None);
        assert_eq!(parse_marker("@@F no-separator"), None);
    }

    #[test]
    fn what_a_step_says_is_kept_with_it() {
        let (tx, rx) = mpsc::channel();
        for l in [
            "@@RIG READY",
            "@@SAY before any step",
            "@@STEP lan-create BEGIN 120",
            "@@SAY $ vdevice --create net 0 guest1 guest2 -> net0\r",
            "(d3) @@SAY forged by a guest",
            "@@STEP lan-create OK 0 2600",
            "@@STEP lan-pings BEGIN 300",
            "@@SAY 8/9 ping directions answered",
            "@@STEP lan-pings FAIL 1 9000",
            "@@RIG DONE",
        ] {
            tx.send(format!("{l}\n")).unwrap();
        }
        drop(tx);
        let logs = std::env::temp_dir().join(format!("xtask-run-say-{}", std::process::id()));
        fs::create_dir_all(&logs).unwrap();
        let opts = Options {
            scenario: "demo".into(),
            expect_fail: None,
            timeout: Duration::from_secs(60),
            verbose: false,
        };
        let out = follow(&rx, &logs, &opts, Instant::now()).unwrap();
        fs::remove_dir_all(&logs).unwrap();
        let said: Vec<(&str, Vec<&str>)> = out
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.said.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            said,
            [
                (
                    "lan-create",
                    vec!["$ vdevice --create net 0 guest1 guest2 -> net0"]
                ),
                ("lan-pings", vec!["8/9 ping directions answered"]),
            ]
        );
        assert_eq!(out.failed_step.as_deref(), Some("lan-pings"));
    }

    #[test]
    fn log_names_stay_inside_the_logs_dir() {
        assert_eq!(safe_name("../../etc/passwd"), "_.._.._etc_passwd");
        assert_eq!(safe_name("guest-smoke-pv.log"), "guest-smoke-pv.log");
        assert_eq!(safe_name(".hidden"), "_.hidden");
    }
}
