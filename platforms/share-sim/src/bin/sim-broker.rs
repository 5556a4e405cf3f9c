//! The simulation's hypervisor as a process of its own: domains started
//! separately connect with `SimPlatform::connect(SOCKET, domid)`.
//!
//! `cargo run -p share-sim --bin sim-broker -- SOCKET`

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: sim-broker SOCKET");
        std::process::exit(2);
    };
    match share_sim::Broker::spawn(&path) {
        Ok(broker) => {
            eprintln!("sim-broker: serving domains at {}", broker.path().display());
            broker.join();
        }
        Err(e) => {
            eprintln!("sim-broker: {e}");
            std::process::exit(1);
        }
    }
}
