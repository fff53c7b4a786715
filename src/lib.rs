//! Kubernetes operator for Altostrat Managed VPN: `VpnInstance` and `VpnPeer` resources are
//! reconciled against the Altostrat REST API.

pub mod altostrat;
pub mod crd;
