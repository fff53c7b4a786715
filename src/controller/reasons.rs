//! The published table of condition reasons: what each means, whether it stalls, what to do,
//! and what Flux (kstatus) and the Argo CD health check make of it. `docs/status.md` holds it as
//! rendered by [`markdown`], and `hack/argocd-health-cases.lua` holds one Argo CD case per row
//! as rendered by [`argo_cases`]; `tests/integration/docs.rs` fails while either differs, and
//! the Lua test runs the shipped health check over those cases.

use super::conditions::{PAUSED, PROFILE_READY, READY, SYNCED, reason};

/// Which kinds a reason applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kinds {
    Both,
    Instance,
    Peer,
    /// `VpnCredentials` only.
    Credentials,
}

/// One row of the table: a condition with its status and reason.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub condition: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub kinds: Kinds,
    /// `Stalled=True` with the same reason: only a person can make progress.
    pub stalled: bool,
    pub meaning: &'static str,
    pub action: &'static str,
}

/// Reasons of a resource a policy holds back: a person chose it, so Argo CD shows `Suspended`
/// rather than `Degraded` (both are "a person must act"; kstatus knows only `Failed`).
const HELD_BY_POLICY: &[&str] = &[reason::PLANNED, reason::PLAN_CHANGED, reason::RECONCILE_PAUSED];

/// `Ready` reasons of a resource being deleted.
const DELETION: &[&str] = &[reason::DELETING, reason::TEARING_DOWN, reason::DELETE_REFUSED];

const fn row(
    (condition, status, reason): (&'static str, bool, &'static str),
    kinds: Kinds,
    stalled: bool,
    (meaning, action): (&'static str, &'static str),
) -> Row {
    Row {
        condition,
        status,
        reason,
        kinds,
        stalled,
        meaning,
        action,
    }
}

use Kinds::{Both, Credentials, Instance, Peer};

const WAIT: &str = "nothing: it resolves by itself";
/// Whether a row stalls the resource (`Row::stalled`).
const STALLS: bool = true;
const GOES_ON: bool = false;

/// Every reason the operator writes, condition by condition.
pub const ROWS: &[Row] = &[
    row(
        (READY, true, reason::AVAILABLE),
        Both,
        GOES_ON,
        (
            "the Altostrat object exists, is provisioned and serves this generation's spec",
            "–",
        ),
    ),
    row(
        (READY, false, reason::PROVISIONING),
        Instance,
        GOES_ON,
        (
            "Altostrat is provisioning the hub; the message lists the flags it waits for",
            WAIT,
        ),
    ),
    row(
        (READY, false, reason::UPDATING),
        Instance,
        GOES_ON,
        (
            "Altostrat is applying changes (`status.pendingChanges`), or holds part of the spec not yet",
            WAIT,
        ),
    ),
    row(
        (READY, false, reason::WAITING_FOR_INSTANCE),
        Peer,
        GOES_ON,
        (
            "the peer's VpnInstance is not usable yet: provisioning, being deleted, or not holding its hub's ownership record",
            "if it lasts, look at the VpnInstance's conditions",
        ),
    ),
    row(
        (READY, false, reason::INSTANCE_NOT_FOUND),
        Peer,
        GOES_ON,
        (
            "no VpnInstance of `spec.instanceRef.name` in the peer's namespace (one Warning event); the peer follows once it is applied",
            "apply the VpnInstance, or correct `spec.instanceRef.name`",
        ),
    ),
    row(
        (READY, false, reason::NOT_PERMITTED),
        Peer,
        STALLS,
        (
            "the VpnInstance of another namespace that `spec.instanceRef` names does not admit the peer's namespace (its `spec.allowedPeers`), or is in a namespace the operator does not watch; nothing is sent to Altostrat, and an Altostrat peer made before a grant was revoked is kept, unwritten (one Warning event)",
            "have the hub's owners grant the namespace, have a cluster administrator label it, or name another hub",
        ),
    ),
    row(
        (READY, false, reason::THROTTLED),
        Both,
        GOES_ON,
        (
            "the API budget of the credentials holds the next request back; it goes when its slot comes (a Normal event)",
            WAIT,
        ),
    ),
    row(
        (READY, false, reason::API_ERROR),
        Both,
        GOES_ON,
        (
            "Altostrat or the Kubernetes API failed (5xx, timeout, …); retried with backoff, the message carries the error",
            "if it lasts, check Altostrat's status and the operator's network",
        ),
    ),
    row(
        (READY, false, reason::INVALID_SPEC),
        Both,
        STALLS,
        (
            "Altostrat, or the operator's own checks, refuse the spec (unknown region, a value it rejects, a conflict)",
            "edit the spec as the message says",
        ),
    ),
    row(
        (READY, false, reason::CREDENTIALS_ERROR),
        Both,
        STALLS,
        (
            "the credentials Secret is missing, unlabelled or not allowed here, or Altostrat answered 401/403; a VpnCredentials that is not granted to the namespace, or two defaults for it (named in the message); on a VpnCredentials: its Secret is missing, unlabelled or has no token",
            "fix the Secret or the token, or the grant (see the message)",
        ),
    ),
    row(
        (READY, true, reason::TOKEN_ACCEPTED),
        Credentials,
        GOES_ON,
        (
            "Altostrat accepts the token (or has refused it only within the grace for a rotation)",
            "–",
        ),
    ),
    row(
        (READY, false, reason::TOKEN_CHECKING),
        Credentials,
        GOES_ON,
        (
            "no answer has judged the token yet: a check call is on its way",
            WAIT,
        ),
    ),
    row(
        (READY, false, reason::TOKEN_REFUSED),
        Credentials,
        GOES_ON,
        (
            "Altostrat refused a token it never accepted; a rotation may still bring a good one within the grace",
            "put a valid token into the Secret",
        ),
    ),
    row(
        (READY, false, reason::TOKEN_REJECTED),
        Credentials,
        STALLS,
        (
            "Altostrat has refused the token for longer than the rotation grace (revoked or wrong)",
            "put a valid token into the Secret: it is read again without a restart",
        ),
    ),
    row(
        (READY, false, reason::HOSTNAME_TAKEN),
        Instance,
        STALLS,
        (
            "the hostname belongs to an Altostrat instance that is not this resource's (named in the message)",
            "choose another hostname, or adopt it with `spec.instanceId`",
        ),
    ),
    row(
        (READY, false, reason::NOT_OWNED),
        Both,
        STALLS,
        (
            "the Altostrat object found is not provably this resource's own: nothing is written to it or deleted",
            "adopt it explicitly, or change the spec",
        ),
    ),
    row(
        (READY, false, reason::NOT_CONVERGING),
        Both,
        STALLS,
        (
            "Altostrat normalises the values sent, or someone else writes them back: the update is not sent again",
            "make the spec match what Altostrat keeps, or stop the other writer",
        ),
    ),
    row(
        (READY, false, reason::USER_NOT_FOUND),
        Peer,
        STALLS,
        (
            "Altostrat does not know the peer's `userId` (deleted there?)",
            "change `userId`, or restore the user in Altostrat",
        ),
    ),
    row(
        (READY, false, reason::SITE_NOT_FOUND),
        Peer,
        STALLS,
        (
            "Altostrat does not know the peer's `siteId` (deleted there?)",
            "change `siteId`, or restore the site in Altostrat",
        ),
    ),
    row(
        (READY, false, reason::QUOTA_EXCEEDED),
        Both,
        STALLS,
        (
            "a seat, quota or subscription limit of the Altostrat account refuses the object",
            "raise the limit in Altostrat, or remove other objects",
        ),
    ),
    row(
        (READY, false, reason::DELETING),
        Instance,
        GOES_ON,
        (
            "the deletion waits for the VpnPeers that reference the hub, named in the message (one Warning event)",
            "delete those peers (or set the hub's `deletionPolicy: Orphan`)",
        ),
    ),
    row(
        (READY, false, reason::TEARING_DOWN),
        Both,
        GOES_ON,
        (
            "Altostrat accepted the DELETE and still lists the object; the resource goes once it is gone",
            WAIT,
        ),
    ),
    row(
        (READY, false, reason::DELETE_REFUSED),
        Both,
        STALLS,
        (
            "Altostrat refuses to delete the object (405, 403, a 404 while it is still listed, …)",
            "delete it in Altostrat, or set `deletionPolicy: Orphan`",
        ),
    ),
    row(
        (READY, false, reason::RECONCILE_PAUSED),
        Both,
        STALLS,
        (
            "paused, and no Altostrat object exists (yet, or any more): its create is withheld",
            "remove the pause annotation",
        ),
    ),
    row(
        (READY, false, reason::PLANNED),
        Both,
        STALLS,
        (
            "`managementPolicy: Plan`, and no Altostrat object exists yet: its create is in `status.plan`, not sent",
            "review `status.plan`, then set `managementPolicy: Full`",
        ),
    ),
    row(
        (READY, false, reason::PLAN_CHANGED),
        Both,
        STALLS,
        (
            "(`Plan`) the create approved with `vpn.altostrat.io/approve-plan` is no longer the plan (the spec or Altostrat changed): nothing is sent",
            "review the new `status.plan`, then approve its `status.planDigest`",
        ),
    ),
    row(
        (READY, false, reason::NOT_FOUND),
        Instance,
        STALLS,
        (
            "`managementPolicy: ObserveOnly`, and no instance with the hostname is visible to the credentials",
            "create the hub in Altostrat, or fix the hostname or the credentials",
        ),
    ),
    row(
        (SYNCED, true, reason::RECONCILE_SUCCESS),
        Both,
        GOES_ON,
        ("Altostrat holds everything this generation's spec asks for", "–"),
    ),
    row(
        (SYNCED, false, reason::PROVISIONING),
        Instance,
        GOES_ON,
        (
            "the hub is created; the fields the message names are sent once Altostrat has provisioned it",
            WAIT,
        ),
    ),
    row(
        (SYNCED, false, reason::UPDATING),
        Instance,
        GOES_ON,
        (
            "Altostrat is still applying the last update; the fields named are sent again if they still differ once it is done",
            WAIT,
        ),
    ),
    row(
        (SYNCED, false, reason::WAITING_FOR_INSTANCE),
        Peer,
        GOES_ON,
        (
            "Altostrat holds nothing of the peer yet: it is sent once its instance is usable (also `InstanceNotFound`)",
            "as for `Ready`",
        ),
    ),
    row(
        (SYNCED, false, reason::NOT_PERMITTED),
        Peer,
        STALLS,
        (
            "the hub does not admit the peer's namespace: nothing is sent to Altostrat",
            "as for `Ready`",
        ),
    ),
    row(
        (SYNCED, false, reason::THROTTLED),
        Both,
        GOES_ON,
        (
            "a change waits for the API budget; `Ready` stays True while the object serves",
            WAIT,
        ),
    ),
    row(
        (SYNCED, false, reason::API_ERROR),
        Both,
        GOES_ON,
        (
            "the last attempt failed; `Ready` stays True while the object serves, and `observedGeneration` waits for the new spec",
            "if it lasts, see the message",
        ),
    ),
    row(
        (SYNCED, false, reason::DRIFTED),
        Both,
        GOES_ON,
        (
            "Altostrat differs from the spec (fields in the message) and the correction is withheld: paused, or `ObserveOnly`",
            "resume, or accept the drift",
        ),
    ),
    row(
        (SYNCED, false, reason::PLANNED),
        Both,
        GOES_ON,
        (
            "(`Plan`) the calls that would apply the spec are in `status.plan`, not sent",
            "review `status.plan`, then set `managementPolicy: Full`, or approve its `status.planDigest` with the annotation `vpn.altostrat.io/approve-plan`",
        ),
    ),
    row(
        (SYNCED, false, reason::PLAN_CHANGED),
        Both,
        GOES_ON,
        (
            "(`Plan`) the plan approved with `vpn.altostrat.io/approve-plan` is no longer the plan (the spec or Altostrat changed since): nothing is sent",
            "review the new `status.plan`, then approve its `status.planDigest`",
        ),
    ),
    row(
        (SYNCED, true, reason::OBSERVED),
        Both,
        GOES_ON,
        ("(`ObserveOnly`) Altostrat matches the fields the spec sets", "–"),
    ),
    row(
        (SYNCED, true, reason::DELETING),
        Both,
        GOES_ON,
        ("the deletion is under way (`Ready` says what it waits for)", "–"),
    ),
    row(
        (PROFILE_READY, true, reason::DELIVERED),
        Peer,
        GOES_ON,
        (
            "(with `spec.profileSecret`) the Secret holds the peer's current client profile",
            "–",
        ),
    ),
    row(
        (PROFILE_READY, false, reason::PROFILE_PENDING),
        Peer,
        GOES_ON,
        (
            "the profile waits for the peer to be in sync, for its instance to finish applying changes, or for the API budget",
            WAIT,
        ),
    ),
    row(
        (PROFILE_READY, false, reason::PROFILE_NOT_AVAILABLE),
        Peer,
        STALLS,
        (
            "Altostrat offers no profile for this peer (a site peer, no share token, an answer in an unknown form)",
            "remove `spec.profileSecret`",
        ),
    ),
    row(
        (PROFILE_READY, false, reason::SECRET_CONFLICT),
        Peer,
        STALLS,
        (
            "a Secret of that name exists and is not this peer's: it is left untouched",
            "choose another `spec.profileSecret.name`, or remove that Secret",
        ),
    ),
    row(
        (PROFILE_READY, false, reason::SHARE_TOKEN_REJECTED),
        Peer,
        STALLS,
        (
            "Altostrat refused the share token, a freshly read one too; tried again at the next resync",
            "check the peer in Altostrat",
        ),
    ),
    row(
        (PAUSED, true, reason::RECONCILE_PAUSED),
        Both,
        GOES_ON,
        (
            "the pause annotation is set: nothing is written to Altostrat, drift is still observed",
            "remove the annotation to resume",
        ),
    ),
];

/// What kstatus (Flux's health checks, `kubectl wait`-like tools) reports for a resource in
/// this row's state, with `Ready` True where the row is about another condition.
pub fn kstatus(row: &Row) -> &'static str {
    // kstatus looks at `deletionTimestamp` before any condition.
    if row.condition == READY && DELETION.contains(&row.reason) {
        "Terminating"
    } else if row.stalled {
        "Failed"
    } else if row.condition == READY && !row.status {
        "InProgress"
    } else {
        "Current"
    }
}

/// What the Argo CD health check (`deploy/gitops/argocd-health.yaml`) reports for it.
pub fn argo(row: &Row) -> &'static str {
    match row {
        Row {
            stalled: true,
            reason,
            ..
        } if HELD_BY_POLICY.contains(reason) => "Suspended",
        Row { stalled: true, .. } => "Degraded",
        Row { condition, .. } if *condition == PAUSED => "Suspended",
        Row {
            condition,
            status: false,
            ..
        } if *condition == READY || *condition == PROFILE_READY => "Progressing",
        _ => "Healthy",
    }
}

/// Whether Flux and Argo CD tell the same story: serving, on its way, or waiting for a person.
/// Argo CD's `Suspended` is a hold a person chose (either serving or not), and its health check
/// reads `ProfileReady`, which kstatus does not (a pending profile is Current for Flux).
pub fn agree(row: &Row) -> bool {
    matches!(
        (kstatus(row), argo(row)),
        ("Current", "Healthy" | "Suspended")
            | ("InProgress" | "Terminating", "Progressing")
            | ("Failed" | "Terminating", "Degraded" | "Suspended")
    ) || (row.condition == PROFILE_READY && kstatus(row) == "Current" && argo(row) == "Progressing")
}

/// The table as `docs/status.md` holds it.
pub fn markdown() -> String {
    let mut out = String::from(
        "| condition | status | reason | kinds | Stalled | Flux (kstatus) | Argo CD | meaning | what to do |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in ROWS {
        let kinds = match r.kinds {
            Both => "both",
            Instance => "VpnInstance",
            Peer => "VpnPeer",
            Credentials => "VpnCredentials",
        };
        let status = if r.status { "True" } else { "False" };
        let stalled = if r.stalled { "True" } else { "–" };
        out.push_str(&format!(
            "| {} | {status} | `{}` | {kinds} | {stalled} | {} | {} | {} | {} |\n",
            r.condition,
            r.reason,
            kstatus(r),
            argo(r),
            r.meaning,
            r.action
        ));
    }
    out
}

/// One Argo CD health case per row, as Lua for `hack/argocd-health-test.lua`: the conditions a
/// resource in that state carries, and the health the table says.
pub fn argo_cases() -> String {
    let mut out = String::from(ARGO_CASES_HEADER);
    for r in ROWS {
        let mut conditions = Vec::new();
        if r.condition != READY {
            conditions.push(lua_condition(READY, true, reason::AVAILABLE));
        }
        conditions.push(lua_condition(r.condition, r.status, r.reason));
        if r.stalled {
            conditions.push(lua_condition("Stalled", true, r.reason));
        }
        let status = if r.status { "True" } else { "False" };
        let (name, conditions, health) = (
            format!("{} {status} {}", r.condition, r.reason),
            conditions.join(", "),
            argo(r),
        );
        out.push_str(&format!(r#"  {{"{name}", {{{conditions}}}, "{health}"}},"#));
        out.push('\n');
    }
    out.push_str(ARGO_CASES_FOOTER);
    out
}

const ARGO_CASES_HEADER: &str = r#"-- Generated from src/controller/reasons.rs (cargo run -- reason-reference --write):
-- one case per row of the reason table in docs/status.md.
return {
"#;
const ARGO_CASES_FOOTER: &str = "}\n";

fn lua_condition(type_: &str, status: bool, reason: &str) -> String {
    let status = if status { "True" } else { "False" };
    format!(r#"{{type = "{type_}", status = "{status}", reason = "{reason}", message = "{type_} {reason}"}}"#)
}

#[cfg(test)]
mod tests {
    use super::super::error::Error;
    use super::*;
    use crate::altostrat::{ApiError, Endpoint, Referent};

    #[test]
    fn flux_and_argo_cd_agree_on_every_row() {
        for r in ROWS {
            assert!(agree(r), "{r:?}: kstatus {} but Argo CD {}", kstatus(r), argo(r));
        }
    }

    /// Every failure's outcome is a row, with the same verdict on stalling.
    #[test]
    fn every_failure_outcome_is_in_the_table() {
        let endpoint = Endpoint::CreatePeer;
        let referent = |referent| ApiError::UnknownReferent {
            endpoint,
            status: 422,
            referent,
            message: String::new(),
        };
        let failures = [
            Error::InvalidSpec(String::new()),
            Error::Credentials(String::new()),
            Error::NotOwned {
                reason: reason::HOSTNAME_TAKEN,
                message: String::new(),
            },
            Error::NotOwned {
                reason: reason::NOT_OWNED,
                message: String::new(),
            },
            Error::NotConverging {
                fields: String::new(),
                reverted: false,
            },
            Error::DeleteRefused {
                what: String::new(),
                message: String::new(),
            },
            Error::Unsettled("instance"),
            Error::Api(referent(Referent::User)),
            Error::Api(referent(Referent::Site)),
            Error::Api(ApiError::QuotaExceeded {
                endpoint,
                status: 402,
                message: String::new(),
            }),
            Error::Api(ApiError::Throttled {
                endpoint,
                expected_wait: std::time::Duration::from_secs(1),
            }),
        ];
        for failure in &failures {
            let outcome = failure.outcome();
            let found = ROWS
                .iter()
                .find(|r| r.condition == READY && r.reason == outcome.reason)
                .unwrap_or_else(|| panic!("{failure:?}: no Ready row for {}", outcome.reason));
            assert_eq!(found.stalled, outcome.stalled, "{failure:?}");
        }
    }

    #[test]
    fn each_row_once() {
        for (i, r) in ROWS.iter().enumerate() {
            let again = ROWS[i + 1..]
                .iter()
                .any(|o| (o.condition, o.status, o.reason) == (r.condition, r.status, r.reason));
            assert!(!again, "{r:?} twice");
        }
    }
}
