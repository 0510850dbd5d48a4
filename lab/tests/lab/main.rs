//! Lab tests: real virtual machines with SoftRoCE, driven through the `rdmig` binary as a user
//! would, plus the library where a test must look underneath (leftover checks, raw protocol).
//!
//! One lab is booted for the whole run (booting is the slow part), the scenarios run in order
//! against it, and the lab is always torn down at the end. A scenario that cannot run (no root,
//! no qemu, no kernel) fails with the reason; nothing is skipped.
//!
//! Run one scenario or a few: `cargo test --test lab -- exec criu` (substring match).

mod containers;
mod docker;
mod e2e;
mod faults;
mod harness;
mod installed;
mod migration;
mod plugin;
mod qp;
mod rdmacm;
mod scenarios;
mod softroce;

fn main() -> std::process::ExitCode {
    harness::main(&[
        scenarios::ALL,
        softroce::SCENARIOS,
        qp::SCENARIOS,
        plugin::SCENARIOS,
        e2e::SCENARIOS,
        rdmacm::SCENARIOS,
        faults::SCENARIOS,
        installed::SCENARIOS,
        containers::SCENARIOS,
        docker::SCENARIOS,
        scenarios::LAST,
    ])
}
