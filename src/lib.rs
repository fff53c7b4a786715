//! Altostrat VPN operator: reconciles `VpnInstance` and `VpnPeer` custom resources against the
//! Altostrat Managed VPN API.

pub mod altostrat;
