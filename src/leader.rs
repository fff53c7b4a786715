//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one replica reconciles.
//!
//! The protocol is client-go's: the holder renews `renewTime` every `lease_duration / 3`; a
//! candidate takes the lease once `renewTime + leaseDurationSeconds` has passed; every write
//! carries the observed `resourceVersion`, so two candidates cannot both win. On shutdown the
//! holder releases the lease (empty holder, 1 s duration) so a standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Outcome of one attempt to take or keep the lease.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    Held,
    HeldByOther(String),
}

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_duration: Duration,
}

/// Whether `identity` may write itself into the lease at `now` (pure).
pub fn may_acquire(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match last {
        Some(last) => last + duration < now,
        None => true,
    }
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// One acquire-or-renew round trip.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.seconds()),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Attempt::Held),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldByOther(String::new())),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                if !may_acquire(Some(&spec), &self.identity, now) {
                    return Ok(Attempt::HeldByOther(spec.holder_identity.unwrap_or_default()));
                }
                let taking_over = spec.holder_identity.as_deref() != Some(self.identity.as_str());
                let new_spec = LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: if taking_over {
                        Some(MicroTime(now))
                    } else {
                        spec.acquire_time.clone()
                    },
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(taking_over)),
                    ..spec
                };
                lease.spec = Some(new_spec);
                // `replace` sends our resourceVersion: a concurrent writer makes this a 409.
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(Attempt::Held),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldByOther(String::new())),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Blocks until this replica holds the lease.
    pub async fn acquire(&self) {
        let retry = Duration::from_secs(2);
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => return,
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::debug!(%holder, "leader lease held by another replica")
                }
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews until renewal fails for two thirds of the lease duration or another replica took the
    /// lease; returns then (leadership is lost and the caller must stop reconciling).
    pub async fn keep_renewing(&self) {
        let mut last_success = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_interval()).await;
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => last_success = tokio::time::Instant::now(),
                Ok(Attempt::HeldByOther(holder)) => {
                    tracing::error!(%holder, "leader lease was taken over");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failed to renew leader lease");
                    // Give up before the lease can expire (client-go's renew deadline), so two
                    // replicas never reconcile at the same time.
                    if last_success.elapsed() >= self.lease_duration * 2 / 3 {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up so a standby can take over without waiting for expiry.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %e, "failed to release leader lease");
        } else {
            tracing::info!("released leader lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(secs),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_live_lease_of_another_holder_cannot_be_taken() {
        let now = Timestamp::from_second(1_000).unwrap();
        let renewed = Timestamp::from_second(990).unwrap();
        assert!(!may_acquire(Some(&spec("a", renewed, 15)), "b", now));
        assert!(
            may_acquire(Some(&spec("b", renewed, 15)), "b", now),
            "own lease is renewable"
        );
    }

    #[test]
    fn expired_or_released_leases_can_be_taken() {
        let now = Timestamp::from_second(1_000).unwrap();
        let renewed = Timestamp::from_second(980).unwrap();
        assert!(may_acquire(Some(&spec("a", renewed, 15)), "b", now));
        assert!(may_acquire(Some(&spec("", now, 15)), "b", now));
        assert!(may_acquire(None, "b", now));
    }
}
