//! kube-runtime controllers for `VpnInstance` and `VpnPeer`.
//!
//! Each reconcile observes (the resource, the caches, what Altostrat holds), asks a pure
//! decision function for the next step (`instance::decide`, `peer::decide`, [`cleanup`]), acts on
//! it, and repeats until a step ends the round; every status write goes through the one
//! [`status::StatusWriter`]. The request bodies and diffs are in [`plan`].
//!
//! - [`watch`]: reflectors, triggers and the two controllers of one watch scope;
//! - `driver`: the reconcile shared by both kinds (span, metrics, events, failure recording);
//! - [`context`]: credentials, region cache and settings shared by the reconciles;
//! - [`observation`]: what Altostrat holds, observed by list and shared by the reconciles;
//! - [`error`]: errors and the requeue policy; [`events`]: the one event per reconcile;
//! - `finalizer`, [`status`]: the writes a reconcile makes to its own object;
//! - `policy`, `planned`: what a reconcile may write to Altostrat (the pause annotation), and
//!   the calls it withholds;
//! - `profile`: a client peer's profile delivered into a Secret (`spec.profileSecret`).

mod cleanup;
pub mod conditions;
pub mod context;
pub mod default_token;
mod driver;
pub mod error;
pub mod events;
mod finalizer;
mod instance;
pub mod observation;
pub mod ownership;
mod peer;
pub mod plan;
mod planned;
mod policy;
mod profile;
pub mod record;
mod secret_guard;
pub mod status;
#[cfg(test)]
mod testing;
pub mod upkeep;
pub mod watch;

pub use context::{Context, Settings};
pub use default_token::DefaultToken;
pub use error::{Error, Result, error_policy, requeue_after_error};
pub use observation::Observations;
pub use watch::{ControllerDeps, WatchScope, run};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "vpn-operator";
