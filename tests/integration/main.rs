//! The fast tier's tests that run outside the crate: the committed CRDs against the Rust types,
//! the documentation against the flags and its own links, and the Altostrat client stack and the simulator over real loopback HTTP. None needs a
//! cluster; the reconcile and decision tests live next to the code (`src/**/tests.rs`).

mod client_resilience;
mod corporate_network;
mod crds;
mod docs;
mod krew;
mod leader_fencing;
mod simulator_http;
