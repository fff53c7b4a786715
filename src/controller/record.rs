//! Ownership records: the proof behind the ownership rule (see [`super::ownership`]).
//!
//! An `OwnershipRecord` is cluster-scoped and written only by the operator, so no tenant can
//! forge one and every watch scope reads the same ones. A resource holds its Altostrat object
//! only through a record naming it (kind, namespace, name and uid) and this installation:
//! - an instance's record is named `instance.<hostname>`: the API server's name uniqueness makes two
//!   holders of one instance impossible, whoever creates, adopts or observes it;
//! - a peer's record is named `peer.<uid>` (Altostrat allows several peers per user on an instance,
//!   so nothing of the peer itself can key it) and labelled with the peer id once known: of
//!   two records naming one peer id, the older holds it and the younger withdraws.
//!
//! Records are read fresh (a GET) at the start of every reconcile: no cache, so no scope can
//! miss one. Status, annotations and spec are inputs to the decisions, never proof.

use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client, Resource, ResourceExt};

use super::error::{Error, Result};
use super::ownership::Claim;
use crate::crd::{
    DeletionPolicy, Holder, INSTALLATION_LABEL, OwnershipRecord, OwnershipRecordSpec, PEER_ID_LABEL,
    RecordOrigin, RecordRole,
};

/// How often records are checked for a holder that no longer exists. A record is freed when
/// its holder is missing at two checks in a row, so never within this interval of the holder's
/// disappearance (a resource being re-created under its name has a new uid).
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The record name of the instance with this hostname label.
pub(crate) fn instance_record(hostname: &str) -> String {
    format!("instance.{}", hostname.to_ascii_lowercase())
}

/// The record name of the peer resource with this uid.
pub(crate) fn peer_record(uid: &str) -> String {
    format!("peer.{}", uid.to_ascii_lowercase())
}

/// What the record of an object says about one resource.
#[derive(Clone, Debug)]
pub(crate) enum Holding {
    /// No record: nobody holds the object.
    Free,
    /// This resource holds it.
    Mine(Box<OwnershipRecord>),
    /// Someone else holds it: another resource, or a resource of another installation (named
    /// for the condition message).
    Other(String),
}

impl Holding {
    /// Judges a record for `me` of installation `installation` (pure).
    pub fn of(record: Option<OwnershipRecord>, me: &Holder, installation: &str) -> Self {
        let Some(record) = record else {
            return Self::Free;
        };
        let spec = &record.spec;
        if spec.installation != installation {
            return Self::Other(format!(
                "{} of the operator installation {:?}",
                holder_name(&spec.holder),
                spec.installation
            ));
        }
        if spec.holder.uid == me.uid && spec.holder.kind == me.kind {
            return Self::Mine(Box::new(record));
        }
        let same_name = Holder {
            uid: String::new(),
            ..spec.holder.clone()
        } == Holder {
            uid: String::new(),
            ..me.clone()
        };
        if same_name {
            return Self::Other(format!(
                "an earlier {} (uid {}), deleted or re-created since; its record is freed about {}s after it \
                 is gone, and then only an explicit adoption proves ownership",
                holder_name(&spec.holder),
                spec.holder.uid,
                2 * SWEEP_INTERVAL.as_secs()
            ));
        }
        Self::Other(holder_name(&spec.holder))
    }

    /// The record, if this resource holds it.
    pub fn mine(&self) -> Option<&OwnershipRecordSpec> {
        match self {
            Self::Mine(record) => Some(&record.spec),
            _ => None,
        }
    }

    /// The record, if this resource holds it in `role`.
    pub fn mine_as(&self, role: RecordRole) -> Option<&OwnershipRecordSpec> {
        self.mine().filter(|r| r.role == role)
    }

    /// The deletion policy in force: the spec's if set; otherwise `Orphan` for an object the
    /// resource adopted (what it did not create, it does not delete unless told to) and
    /// `created_default` (the credentials' or the operator's default) for one it created.
    /// Without a record nothing is deleted anyway.
    pub fn deletion_policy(
        &self,
        spec: Option<DeletionPolicy>,
        created_default: DeletionPolicy,
    ) -> DeletionPolicy {
        spec.unwrap_or(match self.mine().map(|r| r.origin) {
            Some(RecordOrigin::Adopted) => DeletionPolicy::Orphan,
            _ => created_default,
        })
    }

    /// What the claim of a reconcile is after reading this record: a claim the reconcile made
    /// itself stays fresh while the record still holds one (`id` reads the object's id).
    pub fn refreshed_claim(
        &self,
        claim: Claim,
        id: impl Fn(&OwnershipRecordSpec) -> Option<&String>,
    ) -> Claim {
        match (claim, self.claim(id)) {
            (Claim::Fresh(at), Some(_)) => Claim::Fresh(at),
            (_, held) => held.map_or(Claim::None, Claim::Held),
        }
    }

    /// Who else holds the object.
    pub fn other(&self) -> Option<&str> {
        match self {
            Self::Other(who) => Some(who),
            _ => None,
        }
    }

    /// When this resource last claimed a create that has no id recorded yet (`id` reads the
    /// object's id from the record).
    pub fn claim(&self, id: impl Fn(&OwnershipRecordSpec) -> Option<&String>) -> Option<Timestamp> {
        let record = self.mine_as(RecordRole::Manage)?;
        if id(record).is_some() {
            return None;
        }
        record.claimed_at.as_deref()?.parse().ok()
    }
}

/// Of the records naming Altostrat peer `peer_id`, the one that holds it: the oldest (taken
/// first; the name breaks a tie), so that of concurrent adopters, which each write their record
/// and then look, exactly one goes on (pure).
pub(crate) fn peer_holder(records: Vec<OwnershipRecord>, peer_id: &str) -> Option<OwnershipRecord> {
    records
        .into_iter()
        .filter(|r| r.spec.peer_id.as_deref() == Some(peer_id))
        .min_by(|a, b| (&a.spec.taken_at, a.name_any()).cmp(&(&b.spec.taken_at, b.name_any())))
}

/// `Kind namespace/name`.
pub(crate) fn holder_name(holder: &Holder) -> String {
    format!("{} {}/{}", holder.kind, holder.namespace, holder.name)
}

/// The holder a resource is in records.
pub(crate) fn holder<K: Resource<DynamicType = ()>>(obj: &K) -> Holder {
    Holder {
        kind: K::kind(&()).into_owned(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
    }
}

/// The records of one installation.
#[derive(Clone)]
pub struct Records {
    api: Api<OwnershipRecord>,
    installation: String,
}

impl Records {
    pub fn new(client: Client, installation: String) -> Self {
        Self {
            api: Api::all(client),
            installation,
        }
    }

    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// What record `name` says about `me`, read now.
    pub(crate) async fn look(&self, name: &str, me: &Holder) -> Result<Holding> {
        let record = self
            .api
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("read of OwnershipRecord {name}")))?;
        Ok(Holding::of(record, me, &self.installation))
    }

    /// A new record for `holder`, taken now.
    pub(crate) fn new_spec(
        &self,
        holder: Holder,
        role: RecordRole,
        origin: RecordOrigin,
    ) -> OwnershipRecordSpec {
        OwnershipRecordSpec {
            holder,
            role,
            origin,
            installation: self.installation.clone(),
            taken_at: Timestamp::now().to_string(),
            claimed_at: None,
            hostname: None,
            instance_id: None,
            peer_id: None,
        }
    }

    /// Creates record `name`: `Mine` if it was free, otherwise whoever holds it (this resource
    /// too, when an earlier answer was lost).
    pub(crate) async fn take(&self, name: &str, spec: OwnershipRecordSpec) -> Result<Holding> {
        let me = spec.holder.clone();
        let mut record = OwnershipRecord::new(name, spec);
        record.metadata.labels = Some(self.labels(&record.spec));
        match self.api.create(&PostParams::default(), &record).await {
            Ok(created) => Ok(Holding::Mine(Box::new(created))),
            Err(kube::Error::Api(e)) if e.code == 409 => self.look(name, &me).await,
            Err(e) => Err(Error::kube(format!("create of OwnershipRecord {name}"))(e)),
        }
    }

    /// Changes a record this resource holds, on the version it read: a record changed since
    /// is read again and returned as it is now, for the decision to look at.
    pub(crate) async fn change(
        &self,
        record: &OwnershipRecord,
        change: impl FnOnce(&mut OwnershipRecordSpec),
    ) -> Result<Holding> {
        let mut next = record.clone();
        change(&mut next.spec);
        next.metadata.labels = Some(self.labels(&next.spec));
        next.metadata.managed_fields = None;
        let name = record.name_any();
        match self.api.replace(&name, &PostParams::default(), &next).await {
            Ok(replaced) => Ok(Holding::Mine(Box::new(replaced))),
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                self.look(&name, &record.spec.holder).await
            }
            Err(e) => Err(Error::kube(format!("update of OwnershipRecord {name}"))(e)),
        }
    }

    /// Deletes a record this resource holds, only as it was read (uid and resourceVersion
    /// preconditions); one already gone is fine.
    pub(crate) async fn free(&self, record: &OwnershipRecord) -> Result<()> {
        let name = record.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: record.uid(),
                resource_version: record.resource_version(),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::kube(format!("delete of OwnershipRecord {name}"))(e)),
        }
    }

    /// Who holds Altostrat peer `peer_id` other than `me` (see [`peer_holder`]): `None` when
    /// `me` does, or nobody.
    pub(crate) async fn peer_held_elsewhere(&self, peer_id: &str, me: &Holder) -> Result<Option<String>> {
        let params = ListParams::default().labels(&format!("{PEER_ID_LABEL}={}", label_value(peer_id)));
        let listed = self
            .api
            .list(&params)
            .await
            .map_err(Error::kube("list of OwnershipRecords"))?;
        let holder = peer_holder(listed.items, peer_id);
        Ok(Holding::of(holder, me, &self.installation)
            .other()
            .map(str::to_owned))
    }

    fn labels(&self, spec: &OwnershipRecordSpec) -> std::collections::BTreeMap<String, String> {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert(INSTALLATION_LABEL.to_owned(), label_value(&self.installation));
        if let Some(peer_id) = &spec.peer_id {
            labels.insert(PEER_ID_LABEL.to_owned(), label_value(peer_id));
        }
        labels
    }
}

/// One resource's record, as its reconcile last read or wrote it.
pub(crate) struct OwnRecord {
    pub name: String,
    pub me: Holder,
    pub holding: Holding,
}

impl OwnRecord {
    /// Reads record `name` for the resource `me`.
    pub async fn look(records: &Records, name: String, me: Holder) -> Result<Self> {
        let holding = records.look(&name, &me).await?;
        Ok(Self { name, me, holding })
    }

    /// Changes the record this resource holds, or takes the free record as a new one of
    /// `kind` changed by `change`; someone else's is left as it is.
    pub async fn write(
        &mut self,
        records: &Records,
        (role, origin): (RecordRole, RecordOrigin),
        change: impl FnOnce(&mut OwnershipRecordSpec),
    ) -> Result<()> {
        self.holding = match &self.holding {
            Holding::Mine(record) => records.change(record, change).await?,
            Holding::Free => {
                let mut spec = records.new_spec(self.me.clone(), role, origin);
                change(&mut spec);
                records.take(&self.name, spec).await?
            }
            Holding::Other(_) => return Ok(()),
        };
        Ok(())
    }

    /// Changes the record only if this resource holds it.
    pub async fn update(
        &mut self,
        records: &Records,
        change: impl FnOnce(&mut OwnershipRecordSpec),
    ) -> Result<()> {
        if let Holding::Mine(record) = &self.holding {
            self.holding = records.change(record, change).await?;
        }
        Ok(())
    }

    /// Deletes the record if this resource holds it.
    pub async fn free(&mut self, records: &Records) -> Result<()> {
        if let Holding::Mine(record) = &self.holding {
            records.free(record).await?;
            self.holding = Holding::Free;
        }
        Ok(())
    }
}

/// A label value from any string: the characters a label value takes, at most 63.
pub(crate) fn label_value(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '.',
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(uid: &str) -> Holder {
        Holder {
            kind: "VpnInstance".into(),
            namespace: "team-a".into(),
            name: "hub".into(),
            uid: uid.into(),
        }
    }

    fn record(uid: &str, installation: &str) -> OwnershipRecord {
        let records = Records {
            api: Api::all(
                Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap())).unwrap(),
            ),
            installation: installation.into(),
        };
        let spec = records.new_spec(holder(uid), RecordRole::Manage, RecordOrigin::Created);
        OwnershipRecord::new("instance.hub", spec)
    }

    #[tokio::test]
    async fn a_record_is_mine_only_with_my_uid_and_my_installation() {
        let me = holder("uid-1");
        assert!(matches!(Holding::of(None, &me, "ops/a"), Holding::Free));
        assert!(
            Holding::of(Some(record("uid-1", "ops/a")), &me, "ops/a")
                .mine()
                .is_some()
        );
        let mut theirs = record("uid-2", "ops/a");
        theirs.spec.holder.namespace = "team-b".into();
        let other = Holding::of(Some(theirs), &me, "ops/a");
        assert_eq!(other.other(), Some("VpnInstance team-b/hub"));
        let earlier = Holding::of(Some(record("uid-2", "ops/a")), &me, "ops/a");
        assert!(
            earlier.other().is_some_and(|w| w.contains("an earlier")),
            "same name, other uid: {earlier:?}"
        );
        let elsewhere = Holding::of(Some(record("uid-1", "ops/b")), &me, "ops/a");
        assert!(
            elsewhere.other().is_some_and(|w| w.contains("\"ops/b\"")),
            "another installation's record is never mine: {elsewhere:?}"
        );
    }

    #[tokio::test]
    async fn a_claim_counts_only_until_an_id_is_recorded() {
        let mut r = record("uid-1", "ops/a");
        r.spec.claimed_at = Some("2026-11-27T10:00:00Z".into());
        let held = Holding::of(Some(r.clone()), &holder("uid-1"), "ops/a");
        assert!(held.claim(|r| r.instance_id.as_ref()).is_some());
        r.spec.instance_id = Some("i-1".into());
        let recorded = Holding::of(Some(r), &holder("uid-1"), "ops/a");
        assert_eq!(recorded.claim(|r| r.instance_id.as_ref()), None);
    }

    #[tokio::test]
    async fn of_concurrent_adopters_of_one_peer_the_oldest_record_holds_it_whoever_looks() {
        let naming = |name: &str, uid: &str, at: &str, peer: &str| {
            let mut r = record(uid, "ops/a");
            r.metadata.name = Some(name.into());
            (r.spec.taken_at, r.spec.peer_id) = (at.into(), Some(peer.into()));
            r
        };
        let first = naming("peer.b", "uid-b", "2026-11-27T10:00:00Z", "p-1");
        let second = naming("peer.a", "uid-a", "2026-11-27T10:00:01Z", "p-1");
        let tie = naming("peer.c", "uid-c", "2026-11-27T10:00:00Z", "p-1");
        let other_peer = naming("peer.d", "uid-d", "2026-11-27T09:00:00Z", "p-2");
        for order in [
            vec![first.clone(), second.clone(), tie.clone(), other_peer.clone()],
            vec![other_peer.clone(), tie.clone(), second.clone(), first.clone()],
        ] {
            let holder = peer_holder(order, "p-1").unwrap();
            assert_eq!(
                holder.metadata.name.as_deref(),
                Some("peer.b"),
                "older, then the name"
            );
        }
        assert!(peer_holder(vec![other_peer], "p-1").is_none());
    }

    #[test]
    fn label_values_are_valid_whatever_the_input() {
        assert_eq!(
            label_value("altostrat-system/altostrat-vpn-operator"),
            "altostrat-system.altostrat-vpn-operator"
        );
        assert_eq!(label_value("-x-"), "x");
        assert!(label_value(&"a".repeat(100)).len() <= 63);
    }
}
