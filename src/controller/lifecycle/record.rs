//! What a resource does with its own ownership record: claim, own, record the id, withdraw,
//! release. Taken, checked and released here only.

use k8s_openapi::jiff::Timestamp;

use super::super::context::Context;
use super::super::error::Result;
use super::super::record::{self, Holding, OwnRecord};
use super::Managed;
use crate::altostrat::VpnApi;
use crate::crd::{Holder, RecordOrigin, RecordRole};

/// A resource's record, as its reconcile last read or wrote it.
pub(crate) struct Recorded(OwnRecord);

impl Recorded {
    pub async fn look<K: Managed, A: VpnApi>(obj: &K, ctx: &Context<A>) -> Result<Self> {
        let own = OwnRecord::look(&ctx.records, obj.record_name(), record::holder(obj)).await?;
        Ok(Self(own))
    }

    pub fn holding(&self) -> &Holding {
        &self.0.holding
    }

    /// Who else holds the object this resource's spec adopts, while its record does not hold
    /// it yet.
    pub async fn held_elsewhere<K: Managed, A: VpnApi>(
        &self,
        obj: &K,
        ctx: &Context<A>,
    ) -> Result<Option<String>> {
        if let Some(other) = self.holding().other() {
            return Ok(Some(other.to_owned()));
        }
        let Some(wanted) = K::spec_id(obj.spec()) else {
            return Ok(None);
        };
        if self.holding().mine().and_then(K::record_id).map(String::as_str) == Some(wanted) {
            return Ok(None);
        }
        K::holder_of(ctx, wanted, &self.0.me).await
    }

    /// Takes the record for a create on `parent`, or renews the claim of the record held: an
    /// object found later is this create's only if created at or after `at`.
    pub async fn claim<K: Managed, A: VpnApi>(
        &mut self,
        obj: &K,
        ctx: &Context<A>,
        parent: &str,
        at: Timestamp,
    ) -> Result<()> {
        let kind = (RecordRole::Manage, RecordOrigin::Created);
        self.0
            .write(&ctx.records, kind, |r| {
                (r.role, r.origin) = kind;
                r.claimed_at = Some(at.to_string());
                obj.stamp(r, parent, None);
            })
            .await
    }

    /// Takes object `id` in `role` (an explicit adoption, an observation, or an observer
    /// turning manager); only a free record is taken. Where records are not unique by name (a
    /// peer's), the oldest record naming the object holds it: a younger one is freed at once.
    /// Returns who else holds it.
    pub async fn own<K: Managed, A: VpnApi>(
        &mut self,
        obj: &K,
        ctx: &Context<A>,
        (parent, id): (&str, &str),
        role: RecordRole,
    ) -> Result<Option<String>> {
        self.0
            .write(&ctx.records, (role, RecordOrigin::Adopted), |r| {
                r.role = role;
                obj.stamp(r, parent, Some(id.to_owned()));
                r.taken_at = Timestamp::now().to_string();
            })
            .await?;
        if let Some(other) = self.holding().other() {
            return Ok(Some(other.to_owned()));
        }
        let Some(other) = K::holder_of(ctx, id, &self.0.me).await? else {
            return Ok(None);
        };
        self.0.free(&ctx.records).await?;
        Ok(Some(other))
    }

    /// Records the id of this resource's own create, or forgets a vanished one with its claim,
    /// before status.
    pub async fn record_id<K: Managed, A: VpnApi>(
        &mut self,
        obj: &K,
        ctx: &Context<A>,
        parent: &str,
        id: Option<&str>,
    ) -> Result<()> {
        let id = id.map(str::to_owned);
        self.0
            .update(&ctx.records, |r| {
                if id.is_none() {
                    r.claimed_at = None;
                }
                obj.stamp(r, parent, id);
            })
            .await
    }

    /// Withdraws the claim of a create that was refused: nothing of ours can stem from it.
    pub async fn withdraw_claim<K: Managed>(&mut self, ctx: &Context<impl Sized>) -> Result<()> {
        match self.0.holding.mine() {
            Some(r) if K::record_id(r).is_none() => self.0.free(&ctx.records).await,
            _ => Ok(()),
        }
    }

    /// Frees the record, or hands it to `successor`.
    pub async fn release(&mut self, ctx: &Context<impl Sized>, successor: Option<Holder>) -> Result<()> {
        match successor {
            Some(next) => self.0.update(&ctx.records, |r| r.holder = next).await,
            None => self.0.free(&ctx.records).await,
        }
    }
}
