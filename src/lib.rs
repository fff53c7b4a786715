//! Kubernetes operator for Altostrat Managed VPN: `VpnInstance` and `VpnPeer` resources are
//! reconciled against the Altostrat REST API.

pub mod altostrat;
pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod crd_chart;
pub mod crd_check;
pub mod duration;
pub mod generated_docs;
pub mod leader;
pub mod metrics;
#[cfg(test)]
mod module_cycles;
pub mod operator;
pub mod server;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod telemetry;
