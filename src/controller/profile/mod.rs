//! Delivery of a client peer's VPN profile into a Secret of its namespace
//! (`spec.profileSecret`), once the peer is in sync.
//!
//! The profile is fetched (`GET /vpn/client` with the peer's share token) only when the
//! Secret is missing, its data was changed, or the profile's inputs changed (the peer's and
//! its hub's routes, DNS and endpoint, see [`decide::inputs_digest`]); never because a share
//! token expired. The Secret is read with a GET at each look (no Secret watch), written only
//! when it is this peer's own (see [`decide::judge`]), and the profile goes nowhere else:
//! status, events and logs name the Secret and a hash of the profile.

pub(crate) mod decide;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::conditions::{self, ConditionState, PROFILE_READY, reason};
use super::context::Context;
use super::error::{Error, Result};
use super::events::reason as event;
use super::lifecycle::Handle;
use super::observation::Look;
use crate::altostrat::model::{ClientConfiguration, Peer};
use crate::altostrat::{ApiError, ApiToken, Urgency, VpnApi};
use crate::crd::{ProfileSecretStatus, VpnPeer};
use decide::{HASH_ANNOTATION, INPUTS_ANNOTATION, PEER_UID_LABEL, Refresh};

/// The peer as Altostrat holds it, its instance id and the token that pays for the calls.
pub(crate) type PeerAt<'a> = (&'a Peer, &'a str, &'a ApiToken);

/// What the delivery settled on: the `ProfileReady` condition (`None`: the field is unset)
/// and the Secret written, if any.
type Settled = (Option<ConditionState>, Option<ProfileSecretStatus>);

/// Brings the profile Secret of `obj` up to date. Returns when to look again sooner than the
/// peer's own schedule (while the profile waits for its instance).
pub(crate) async fn deliver<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    at: PeerAt<'_>,
) -> Result<Option<Duration>> {
    let wanted = obj.spec.profile_secret.as_ref().map(|s| s.name.clone());
    let recorded = handle.status.stored().and_then(|s| s.profile_secret.clone());
    if let Some(old) = recorded.filter(|r| Some(&r.name) != wanted.as_ref()) {
        remove_own(obj, ctx, handle, &old.name).await?;
    }
    let (settled, sooner) = match wanted {
        None => ((None, None), None),
        Some(name) => settle(obj, ctx, handle, at, &name).await?,
    };
    write(obj, ctx, handle, settled).await?;
    Ok(sooner)
}

/// The condition for a peer that waits for its first look, while `spec.profileSecret` asks
/// for a profile and no `ProfileReady` says anything yet.
pub(crate) fn pending_until_ready(obj: &VpnPeer) -> Option<ConditionState> {
    obj.spec.profile_secret.as_ref()?;
    let stated = obj
        .status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == PROFILE_READY));
    (!stated).then(|| pending("the peer is not in sync with Altostrat yet".into()))
}

/// The `ProfileReady` condition once the Altostrat peer `id` is gone, if a profile is asked
/// for: the Secret's profile no longer connects, and the new peer's is fetched once it exists.
pub(crate) fn outdated_by_loss(obj: &VpnPeer, id: &str) -> Option<(&'static str, Option<ConditionState>)> {
    obj.spec.profile_secret.as_ref()?;
    let why = format!(
        "Altostrat peer {id} is gone, and with it the profile the Secret holds; the new peer's follows once it exists"
    );
    Some((PROFILE_READY, Some(pending(why))))
}

async fn settle<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    at: PeerAt<'_>,
    name: &str,
) -> Result<(Settled, Option<Duration>)> {
    let (peer, instance_id, token) = at;
    // Until it is known to be gone or someone else's, the Secret written last is still there.
    let kept = handle
        .status
        .stored()
        .and_then(|s| s.profile_secret.clone())
        .filter(|s| s.name == name);
    if let Some(why) = decide::unavailable(peer) {
        return Ok(((Some(not_available(why)), kept), None));
    }
    let look = instance_look(obj, ctx, token);
    let instance = match ctx
        .observations
        .instance(&*ctx.api, token, instance_id, look)
        .await
    {
        Ok(instance) => instance,
        Err(e) => return held_back(e).map(|wait| ((Some(pending(budget_wait(wait))), kept), Some(wait))),
    };
    let inputs = match instance.as_ref().map(|i| decide::inputs_digest(peer, i)) {
        Some(Ok(inputs)) => inputs,
        Some(Err(why)) => return Ok(((Some(pending(why)), kept), Some(ctx.settings.provisioning_poll))),
        None => return Ok(((Some(pending("the instance is gone".into())), kept), None)),
    };
    let secrets = secrets_of(obj, ctx);
    let existing = secrets
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read of Secret {name}")))?;
    let seen = decide::judge(existing.as_ref(), &obj.uid().unwrap_or_default());
    Ok(match decide::refresh(&seen, &inputs) {
        Refresh::Conflict => ((Some(conflict(name)), None), None),
        Refresh::Current { profile_hash } => (delivered(name, profile_hash), None),
        Refresh::Fetch { why } => {
            let target = (&secrets, existing, name);
            let ((condition, written), sooner) =
                refresh(obj, ctx, handle, (at, &inputs, why), target).await?;
            ((condition, written.or(kept.filter(|_| seen.is_ours()))), sooner)
        }
    })
}

/// Fetches the profile and writes it into the Secret (`existing`: this peer's, or none).
async fn refresh<A: VpnApi>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    (at, inputs, why): (PeerAt<'_>, &str, &str),
    (secrets, existing, name): (&Api<Secret>, Option<Secret>, &str),
) -> Result<(Settled, Option<Duration>)> {
    let peer = at.0;
    let configuration = match fetch(ctx, at).await? {
        Fetched::Profile(configuration) => configuration,
        Fetched::NotIssued(why) => return Ok(((Some(not_available(why)), None), None)),
        Fetched::Rejected(why) => return Ok(((Some(rejected(why)), None), None)),
        Fetched::HeldBack(wait) => return Ok(((Some(pending(budget_wait(wait))), None), Some(wait))),
    };
    let data = match decide::contents(peer.protocol, &configuration) {
        Ok(data) => data,
        Err(why) => return Ok(((Some(not_available(why)), None), None)),
    };
    let hash = decide::profile_hash(&data);
    let secret = profile_secret(obj, existing, name, data, (inputs, &hash));
    write_secret(secrets, secret).await?;
    handle.activity.record(
        event::PROFILE_WRITTEN,
        format!("wrote the client profile to Secret {name} ({why}; profile {hash})"),
    );
    Ok((delivered(name, hash), None))
}

/// A client configuration, or why there is none.
enum Fetched {
    Profile(ClientConfiguration),
    /// Altostrat shows no share token for the peer.
    NotIssued(String),
    /// Altostrat refused a share token it had just shown.
    Rejected(String),
    /// The token's budget holds the next call back this long: the peer is in sync, only its
    /// profile waits (no error, no `Synced=False`).
    HeldBack(Duration),
}

/// Fetches the configuration with the share token observed with the peer; if there is none
/// or it is refused (expired), with the one a GET of the peer shows now. At most three calls,
/// and only when the profile is needed.
async fn fetch<A: VpnApi>(ctx: &Context<A>, (peer, instance_id, token): PeerAt<'_>) -> Result<Fetched> {
    if let Some(share) = peer.token.as_deref() {
        match ctx.api.client_configuration(token, &ApiToken::new(share)).await {
            Ok(configuration) => return Ok(Fetched::Profile(configuration)),
            Err(e) if refuses_token(&e) => {
                tracing::debug!(error = %e, "share token refused; reading a fresh one")
            }
            Err(e) => return held_back(e).map(Fetched::HeldBack),
        }
    }
    let fresh = match ctx
        .observations
        .peer_now(&*ctx.api, token, instance_id, &peer.id)
        .await
    {
        Ok(fresh) => fresh,
        Err(e) => return held_back(e).map(Fetched::HeldBack),
    };
    let Some(share) = fresh.and_then(|p| p.token) else {
        let why = "Altostrat shows no share token for this peer, so it offers no profile to download";
        return Ok(Fetched::NotIssued(why.into()));
    };
    match ctx.api.client_configuration(token, &ApiToken::new(share)).await {
        Ok(configuration) => Ok(Fetched::Profile(configuration)),
        Err(e) if refuses_token(&e) => Ok(Fetched::Rejected(e.to_string())),
        Err(e) => held_back(e).map(Fetched::HeldBack),
    }
}

/// The wait of a call the budget held back; any other failure is the reconcile's error.
fn held_back(e: ApiError) -> Result<Duration> {
    match e {
        ApiError::Throttled { expected_wait, .. } => Ok(expected_wait),
        other => Err(other.into()),
    }
}

fn budget_wait(wait: Duration) -> String {
    format!(
        "the API budget holds its download back for about {}s",
        wait.as_secs().max(1)
    )
}

/// How an expired or replaced share token is plausibly answered.
fn refuses_token(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Unauthorized { .. } | ApiError::Forbidden { .. } | ApiError::NotFound { .. }
    )
}

/// The Secret to write: `existing` (this peer's) with the new data, or a new one. Labels and
/// annotations others added to an existing one are kept.
fn profile_secret(
    obj: &VpnPeer,
    existing: Option<Secret>,
    name: &str,
    data: BTreeMap<String, ByteString>,
    (inputs, hash): (&str, &str),
) -> Secret {
    let mut secret = existing.unwrap_or_default();
    let meta = &mut secret.metadata;
    meta.name = Some(name.to_owned());
    meta.namespace = obj.namespace();
    meta.managed_fields = None;
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        "altostrat-vpn-operator".into(),
    );
    labels.insert("app.kubernetes.io/component".into(), "vpn-profile".into());
    labels.insert(PEER_UID_LABEL.into(), obj.uid().unwrap_or_default());
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(INPUTS_ANNOTATION.into(), inputs.to_owned());
    annotations.insert(HASH_ANNOTATION.into(), hash.to_owned());
    annotations.insert("vpn.altostrat.io/peer".into(), obj.name_any());
    meta.owner_references = Some(vec![owner_reference(obj)]);
    secret.type_ = Some("Opaque".into());
    secret.data = Some(data);
    secret.string_data = None;
    secret
}

fn owner_reference(obj: &VpnPeer) -> OwnerReference {
    OwnerReference {
        api_version: VpnPeer::api_version(&()).into_owned(),
        kind: VpnPeer::kind(&()).into_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Creates the Secret, or replaces the version that was judged this peer's own: if anyone
/// changed it since, the write fails (409) and the next look judges it again.
async fn write_secret(secrets: &Api<Secret>, secret: Secret) -> Result<()> {
    let name = secret.name_any();
    let params = PostParams::default();
    let written = match secret.resource_version() {
        Some(_) => secrets.replace(&name, &params, &secret).await,
        None => secrets.create(&params, &secret).await,
    };
    written
        .map(drop)
        .map_err(Error::kube(format!("write of Secret {name}")))
}

/// The Secrets of the peer's namespace.
fn secrets_of<A>(obj: &VpnPeer, ctx: &Context<A>) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default())
}

/// Deletes the Secret a previous `spec.profileSecret` named, if it is this peer's own.
async fn remove_own<A>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    name: &str,
) -> Result<()> {
    let secrets = secrets_of(obj, ctx);
    let found = secrets
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read of Secret {name}")))?;
    let Some(secret) = found.filter(|s| decide::judge(Some(s), &obj.uid().unwrap_or_default()).is_ours())
    else {
        return Ok(());
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.uid(),
            resource_version: secret.resource_version(),
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(Error::kube(format!("delete of Secret {name}"))(e)),
    }
    let note = format!("deleted Secret {name}, which spec.profileSecret no longer names");
    handle.activity.record(event::PROFILE_REMOVED, note);
    Ok(())
}

/// Writes the settled condition and Secret into status, and warns once when the profile
/// cannot be delivered for a reason a person must look at.
async fn write<A>(
    obj: &VpnPeer,
    ctx: &Context<A>,
    handle: &mut Handle<VpnPeer>,
    settled: Settled,
) -> Result<()> {
    let (condition, written) = settled;
    let before = handle
        .status
        .stored()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == PROFILE_READY))
        .map(|c| c.reason.clone());
    let warn = condition
        .as_ref()
        .filter(|c| needs_a_person(c.reason) && before.as_deref() != Some(c.reason));
    if let Some(c) = warn {
        let reason = (c.reason, "Deliver");
        ctx.publish(obj, EventType::Warning, reason, c.message.clone())
            .await;
    }
    handle
        .status
        .write_stage((PROFILE_READY, condition), |status| {
            status.profile_secret = written
        })
        .await
}

fn needs_a_person(reason: &str) -> bool {
    conditions::PROFILE_STALLS.contains(&reason)
}

/// The instance as the shared view holds it: recent enough for a converged peer, fresher
/// while the profile waits for the instance's changes to be applied. Either look is a drift
/// check's: while writes queue it is put off (`ProfilePending` at its expected slot) instead
/// of holding a reconcile worker, so profiles never slow down the creation of a fleet.
fn instance_look<A>(obj: &VpnPeer, ctx: &Context<A>, token: &ApiToken) -> Look {
    let waiting = obj.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == PROFILE_READY && c.reason == reason::PROFILE_PENDING)
    });
    match waiting {
        true => Look::within(ctx.settings.provisioning_poll, Urgency::Drift),
        false => Look::within(ctx.drift_interval(token), Urgency::Drift),
    }
}

fn delivered(name: &str, profile_hash: String) -> Settled {
    let message = format!("Secret {name} holds the current client profile ({profile_hash})");
    let condition = ConditionState::new(PROFILE_READY, true, reason::DELIVERED, message);
    let written = ProfileSecretStatus {
        name: name.to_owned(),
        profile_hash,
    };
    (Some(condition), Some(written))
}

fn pending(why: String) -> ConditionState {
    let message = format!("The profile waits: {why}");
    ConditionState::new(PROFILE_READY, false, reason::PROFILE_PENDING, message)
}

fn not_available(why: String) -> ConditionState {
    ConditionState::new(PROFILE_READY, false, reason::PROFILE_NOT_AVAILABLE, why)
}

fn conflict(name: &str) -> ConditionState {
    let message = format!(
        "Secret {name} exists and is not this VpnPeer's (a controller reference to it and the label {PEER_UID_LABEL} with its uid); it is left untouched. Choose another spec.profileSecret.name, or delete that Secret"
    );
    ConditionState::new(PROFILE_READY, false, reason::SECRET_CONFLICT, message)
}

fn rejected(why: String) -> ConditionState {
    let message = format!(
        "Altostrat refused the peer's share token, a freshly read one too; retried at the next resync: {why}"
    );
    ConditionState::new(PROFILE_READY, false, reason::SHARE_TOKEN_REJECTED, message)
}
