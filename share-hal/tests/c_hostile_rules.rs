//! What a hostile backend can make the guest modules do, as their parse.c
//! decides it (issue 18): `guest-drivers/tests/hostile-rules.c` checks
//! xensnet's feature choice, trigger accounting, tx wake and GSO limits
//! and xensblk's indirect and bounce pages, segments and trigger
//! accounting; this test compiles it with the host's C compiler and runs
//! it. Each check prints a line; any `FAIL` fails the test.
mod c_common;

use std::process::Command;

#[test]
fn hostile_backend_rules_hold() {
    let exe = c_common::compile(
        "hostile-rules",
        &[
            "tests/hostile-rules.c",
            "xensnet/parse.c",
            "xensblk/parse.c",
        ],
    );
    let out = Command::new(&exe).output().expect("running hostile-rules");
    let text = String::from_utf8(out.stdout).unwrap();
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty() && out.status.success(),
        "hostile-rules.c:\n{}",
        failed.join("\n")
    );
    let passed = text.lines().filter(|l| l.starts_with("ok ")).count();
    // Every check ran (a check dropped by mistake would pass silently).
    assert!(passed >= 35, "only {passed} checks ran:\n{text}");
}
