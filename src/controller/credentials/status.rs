//! The status of a VpnCredentials: decided from what was observed (pure), written only when
//! it changed, so a converged resync writes nothing.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::judge::Judgement;
use crate::controller::FIELD_MANAGER;
use crate::controller::conditions::{self, ConditionState, READY, STALLED, reason};
use crate::controller::default_token::Standing;
use crate::controller::error::{Error, Result};
use crate::crd::{VpnCredentials, VpnCredentialsStatus};

/// What one reconcile of a VpnCredentials saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The rate in force, or why the token cannot be read.
    pub rate: std::result::Result<u32, String>,
    pub judgement: Option<Judgement>,
    pub users: u32,
}

/// The desired conditions and last error.
pub fn conditions(observed: &Observed, grace: Duration) -> (Vec<ConditionState>, Option<String>) {
    let standing = match (&observed.rate, &observed.judgement) {
        (Err(why), _) => return stalled(reason::CREDENTIALS_ERROR, why.clone()),
        (Ok(_), Some(judgement)) => judgement.standing,
        (Ok(_), None) => Standing::Unanswered,
    };
    let ready = |reason, message: &str| (vec![ConditionState::new(READY, true, reason, message)], None);
    match standing {
        Standing::Accepted => ready(reason::TOKEN_ACCEPTED, "the Altostrat API accepts the token"),
        Standing::Rotating { refused_for, .. } => ready(
            reason::TOKEN_ACCEPTED,
            &format!(
                "the Altostrat API accepted the token, and has refused it for {}s: within the {}s grace for a rotation",
                refused_for.as_secs(),
                grace.as_secs()
            ),
        ),
        Standing::Unanswered => (
            vec![ConditionState::new(
                READY,
                false,
                reason::TOKEN_CHECKING,
                "no answer of the Altostrat API has judged the token yet",
            )],
            None,
        ),
        Standing::Unproven { status, .. } => {
            let why = format!(
                "the Altostrat API refused the token ({status}) and has not accepted it yet; put a valid token into the Secret"
            );
            (
                vec![ConditionState::new(
                    READY,
                    false,
                    reason::TOKEN_REFUSED,
                    why.clone(),
                )],
                Some(why),
            )
        }
        Standing::Rejected { status, refused_for } => stalled(
            reason::TOKEN_REJECTED,
            format!(
                "the Altostrat API has refused the token ({status}) for {}s, longer than the {}s grace for a rotation; put a valid token into the Secret (read again without a restart)",
                refused_for.as_secs(),
                grace.as_secs()
            ),
        ),
    }
}

fn stalled(reason: &'static str, why: String) -> (Vec<ConditionState>, Option<String>) {
    let states = vec![
        ConditionState::new(READY, false, reason, why.clone()),
        ConditionState::new(STALLED, true, reason, why.clone()),
    ];
    (states, Some(why))
}

/// The status to hold: `stored` is kept where it says the same, so that timestamps stay and
/// the count of calls is rewritten only when it moved by more than a few.
pub fn desired(
    obj: &VpnCredentials,
    observed: &Observed,
    grace: Duration,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> VpnCredentialsStatus {
    let stored = obj.status.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let (states, last_error) = conditions(observed, grace);
    let calls = observed.judgement.map_or(0, |j| j.calls_last_minute);
    VpnCredentialsStatus {
        observed_generation: generation,
        requests_per_minute: observed.rate.as_ref().ok().copied(),
        users: observed.users,
        calls_last_minute: if moved(stored.calls_last_minute, calls) {
            calls
        } else {
            stored.calls_last_minute
        },
        last_error,
        conditions: conditions::merge(&stored.conditions, &states, generation, now),
    }
}

/// Whether a count of calls moved enough to be written: by more than five, and more than a
/// fifth; a drop to zero always is.
fn moved(stored: u32, now: u32) -> bool {
    let change = stored.abs_diff(now);
    (now == 0 && stored != 0) || (change > 5 && change * 5 > stored)
}

/// Writes the status if it differs from the stored one.
pub async fn write(
    client: &Client,
    obj: &VpnCredentials,
    observed: &Observed,
    grace: Duration,
) -> Result<()> {
    let status = desired(obj, observed, grace, &conditions::now());
    if obj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<VpnCredentials> = Api::all(client.clone());
    let patch = serde_json::json!({
        "apiVersion": "vpn.altostrat.io/v1alpha1",
        "kind": "VpnCredentials",
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!(
        "status write of VpnCredentials {}",
        obj.name_any()
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const GRACE: Duration = Duration::from_secs(180);

    fn observed(standing: Standing) -> Observed {
        Observed {
            rate: Ok(60),
            judgement: Some(Judgement {
                standing,
                calls_last_minute: 3,
                last_answer: Some(Instant::now()),
            }),
            users: 2,
        }
    }

    fn reasons(observed: &Observed) -> Vec<(&'static str, bool, &'static str)> {
        let (states, _) = conditions(observed, GRACE);
        states.iter().map(|s| (s.type_, s.status, s.reason)).collect()
    }

    #[test]
    fn an_accepted_or_rotating_token_is_ready_and_a_rejected_one_stalls() {
        assert_eq!(
            reasons(&observed(Standing::Accepted)),
            [(READY, true, reason::TOKEN_ACCEPTED)]
        );
        let rotating = Standing::Rotating {
            status: 401,
            refused_for: Duration::from_secs(5),
        };
        assert_eq!(
            reasons(&observed(rotating)),
            [(READY, true, reason::TOKEN_ACCEPTED)]
        );
        let unproven = Standing::Unproven {
            status: 401,
            refused_for: Duration::from_secs(5),
        };
        assert_eq!(
            reasons(&observed(unproven)),
            [(READY, false, reason::TOKEN_REFUSED)]
        );
        let rejected = Standing::Rejected {
            status: 401,
            refused_for: Duration::from_secs(200),
        };
        assert_eq!(
            reasons(&observed(rejected)),
            [
                (READY, false, reason::TOKEN_REJECTED),
                (STALLED, true, reason::TOKEN_REJECTED)
            ]
        );
        assert_eq!(
            reasons(&observed(Standing::Unanswered)),
            [(READY, false, reason::TOKEN_CHECKING)]
        );
    }

    #[test]
    fn an_unreadable_secret_stalls_and_is_the_last_error() {
        let broken = Observed {
            rate: Err("Secret ops/token not found".into()),
            judgement: None,
            users: 0,
        };
        let (states, last_error) = conditions(&broken, GRACE);
        assert_eq!(states[1].type_, STALLED);
        assert_eq!(last_error.as_deref(), Some("Secret ops/token not found"));
    }

    #[test]
    fn a_converged_resync_computes_the_stored_status_and_small_call_changes_are_not_written() {
        let mut obj = VpnCredentials::new(
            "shared",
            serde_json::from_value(serde_json::json!({"secretRef": {"name": "t"}})).unwrap(),
        );
        obj.metadata.generation = Some(1);
        let now = conditions::now();
        let first = desired(&obj, &observed(Standing::Accepted), GRACE, &now);
        obj.status = Some(first.clone());
        let mut busier = observed(Standing::Accepted);
        busier.judgement.as_mut().unwrap().calls_last_minute = 5;
        let later =
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now.0 + std::time::Duration::from_secs(60));
        assert_eq!(desired(&obj, &busier, GRACE, &later), first);
        busier.judgement.as_mut().unwrap().calls_last_minute = 30;
        assert_eq!(desired(&obj, &busier, GRACE, &later).calls_last_minute, 30);
        assert!(moved(4, 0) && !moved(0, 0) && !moved(0, 3) && !moved(100, 110) && moved(100, 130));
    }
}
