//! Holds Rust's copy of Xen structures and constants against Xen's public
//! headers (`libxen-dev`), the ABI authority: a C program built with the
//! host's compiler prints each size, offset and value, and every one must
//! equal Rust's. Shared by the crates that copy Xen ABI (share-pvh,
//! xen-pv), each including this file in its tests (`#[path]`), so the
//! check is written once.

use std::process::Command;

/// The C expression for a layout name: `type.field` an offset, an
/// upper-case name a constant (its absolute value), else a struct's size.
fn c_expr(name: &str) -> String {
    if let Some((ty, field)) = name.split_once('.') {
        return format!("offsetof(struct {ty}, {field})");
    }
    if name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
        return format!("(long)({name} < 0 ? -({name}) : {name})");
    }
    format!("sizeof(struct {name})")
}

/// Compares `layouts` (name, Rust's value) with what C says after
/// `prelude` (the `#include`s and `#define`s the names need). Skips, and
/// says so, where the headers are not installed.
pub fn check_against_headers(tag: &str, prelude: &str, layouts: &[(&str, usize)]) {
    if !std::path::Path::new("/usr/include/xen/xen.h").exists() {
        // `cargo xtask test` installs libxen-dev; a bare `cargo test` on a
        // machine without it cannot compare.
        eprintln!("SKIPPED: Xen public headers absent (apt-get install libxen-dev)");
        return;
    }
    let mut prog = format!(
        "#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n{prelude}\nint main(void) {{\n"
    );
    for (name, _) in layouts {
        prog.push_str(&format!(
            "    printf(\"%ld\\n\", (long)({}));\n",
            c_expr(name)
        ));
    }
    prog.push_str("    return 0;\n}\n");
    let dir = std::env::temp_dir().join(format!("{tag}-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("abi.c");
    let exe = dir.join("abi");
    std::fs::write(&src, &prog).unwrap();
    let out = Command::new("cc")
        .arg("-D__XEN_INTERFACE_VERSION__=0x00040e00")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("a C compiler is required to check the Xen ABI");
    assert!(
        out.status.success(),
        "compiling the Xen ABI check failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    let got: Vec<usize> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(got.len(), layouts.len());
    let wrong: Vec<String> = layouts
        .iter()
        .zip(&got)
        .filter(|((_, rust), c)| rust != *c)
        .map(|((name, rust), c)| format!("{name}: Rust {rust}, C {c}"))
        .collect();
    assert!(wrong.is_empty(), "ABI mismatches: {wrong:#?}");
}
