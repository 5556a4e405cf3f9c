//! vdevice: the dom0 tool. It manages each domain's vdevice page, one
//! acknowledged change at a time (see docs/protocol.md).
use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Manage the vdevice pages of Xen domains (xen-share)")]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "vdevice: no commands yet; the vdevice page protocol is specified in docs/protocol.md"
    );
    std::process::exit(2);
}
