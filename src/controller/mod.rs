//! kube-runtime controllers for `VpnInstance` and `VpnPeer`.
//!
//! Both kinds run one lifecycle ([`lifecycle`]): each reconcile observes (the resource, its
//! ownership record, what Altostrat holds), asks a pure decision for the next step
//! (`lifecycle::decide`, [`cleanup`] for a deletion), acts on it, and repeats until a step ends
//! the round; every status write goes through the one [`status::StatusWriter`]. A kind
//! (`instance`, `peer`) supplies only what differs: how its object is found, created, updated
//! and deleted, what it waits for, and its status fields. See `README.md` in this directory for
//! a map.

pub(crate) mod approval;
mod cleanup;
pub mod conditions;
pub mod context;
pub mod credentials;
pub mod default_token;
pub mod error;
pub mod events;
mod finalizer;
mod instance;
mod lifecycle;
pub mod namespaces;
pub mod observation;
pub mod ownership;
mod peer;
pub mod plan;
mod planned;
mod policy;
mod profile;
pub mod reasons;
pub mod record;
mod secret_guard;
pub mod status;
#[cfg(test)]
mod testing;
pub mod upkeep;
pub mod watch;

pub use context::{Context, Settings};
pub use default_token::DefaultToken;
pub use error::{Error, Result, requeue_after_error};
pub use observation::Observations;
pub use watch::{ControllerDeps, Scopes, WatchScope, run};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "vpn-operator";
