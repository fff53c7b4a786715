//! How closely the simulator answers like the real service: the documented answers by default,
//! and opt-in answers the real service plausibly gives where the docs are silent.

use std::time::Duration;

/// Answers closer to what the real Altostrat API sends or plausibly sends. The defaults follow
/// the documentation where it speaks and the project's choices where it is silent; the other
/// settings are opt-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fidelity {
    /// Status of a create whose hostname is taken: 409 (`hostname_taken` ErrorResponse, the
    /// default), 422 (Laravel's validation answer `{message, errors: {hostname: [..]}}`) or 400
    /// (the same Laravel body with status 400).
    pub hostname_taken_status: u16,
    /// A created instance gets one public DNS resolver, as in every documented create example
    /// (the PUT still requires 2–4). On by default, because the docs say so; off gives two.
    pub single_public_dns: bool,
    /// List endpoints answer `{"data": [...], "has_more": false}` instead of a bare array.
    pub enveloped_lists: bool,
    /// Error bodies are `{"message": ...}` only (Laravel's `abort()`), without `type`, `code`
    /// and `doc_url`.
    pub message_only_errors: bool,
    /// Peer seats of each account: creating a peer beyond them answers 403 with a bare
    /// `{message}` naming the seat limit (the shape of Altostrat's billing refusals).
    pub peer_seats: Option<u32>,
    /// How `DELETE /vpn/instances/{id}` answers; the docs do not show the operation at all.
    pub instance_delete: InstanceDelete,
    /// Answers carry what the docs do not mention: every instance and peer has the extra fields
    /// `labels` and `billing`; an instance update adds the pending status `firewall-syncing`
    /// next to `config-updated`; each new instance gets a peer of kind `gateway` over `ipsec`
    /// with no user or site (it takes no peer seat).
    pub unknown_values: bool,
}

/// The answers to `DELETE /vpn/instances/{id}`. The operation is undocumented; the changelog
/// speaks of a teardown process, so each plausible shape can be simulated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstanceDelete {
    /// 204: the instance and its peers are gone at once and its hostname is free.
    #[default]
    Immediate,
    /// 202 with an empty body: the instance stays visible with `deleting` in its `status` until
    /// `teardown` has passed since the first DELETE (a repeated DELETE answers 202 and does not
    /// restart it), then it and its peers are gone. Meanwhile its hostname stays taken, and a
    /// PUT of it or a new peer on it answers 409 "The instance is being deleted.".
    Asynchronous { teardown: Duration },
    /// 405 with `Allow: GET, HEAD, PUT` and Laravel's `{message}` for a route without DELETE;
    /// nothing is deleted.
    NotAllowed,
}

/// The teardown of [`InstanceDelete::Asynchronous`] unless `--teardown-delay` says otherwise.
pub const DEFAULT_TEARDOWN: Duration = Duration::from_secs(3);

impl Default for Fidelity {
    fn default() -> Self {
        Self {
            hostname_taken_status: 409,
            single_public_dns: true,
            enveloped_lists: false,
            message_only_errors: false,
            peer_seats: None,
            instance_delete: InstanceDelete::Immediate,
            unknown_values: false,
        }
    }
}
