//! The Altostrat Managed VPN API boundary.

pub mod model;
