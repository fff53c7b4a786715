//! Upkeep of the ownership records: the one-time migration from ids in status, and the freeing
//! of records whose holder is gone.

use std::collections::{BTreeMap, HashMap, HashSet};

use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::error::{Error, Result};
use super::record::{Holding, Records, SWEEP_INTERVAL, holder, instance_record, label_value, peer_record};
use super::watch::WatchScope;
use crate::crd::{
    Holder, INSTALLATION_LABEL, ManagementPolicy, OwnershipRecord, RecordOrigin, RecordRole, VpnInstance,
    VpnPeer,
};

/// The holder kind of the record that marks a migration done.
const MIGRATION_KIND: &str = "Installation";

/// At the first start of this version: records for the ids a previous version recorded in
/// status (trusted once, as that version trusted them), so that existing resources keep their
/// objects. An id recorded by two resources gets no record: neither can prove it is its own.
/// A record named `migration.<installation>` marks it done; it never runs again.
pub async fn migrate(
    client: &Client,
    scopes: &[WatchScope],
    records: &Records,
    selector: Option<&str>,
) -> Result<()> {
    let marker = format!(
        "migration.{}",
        label_value(records.installation())
            .to_ascii_lowercase()
            .replace('_', "-")
    );
    let me = Holder {
        kind: MIGRATION_KIND.into(),
        name: records.installation().into(),
        ..Holder::default()
    };
    if records.look(&marker, &me).await?.mine().is_some() {
        return Ok(());
    }
    let params = selector.map_or_else(ListParams::default, |s| ListParams::default().labels(s));
    let mut instances = Vec::new();
    let mut peers = Vec::new();
    for scope in scopes {
        instances.extend(list::<VpnInstance>(client, scope, &params).await?);
        peers.extend(list::<VpnPeer>(client, scope, &params).await?);
    }
    let taken = record_instances(records, &instances).await? + record_peers(records, &peers).await?;
    tracing::info!(
        taken,
        "ownership records made from the ids in status of the previous version"
    );
    records
        .take(
            &marker,
            records.new_spec(me, RecordRole::Observe, RecordOrigin::Created),
        )
        .await?;
    Ok(())
}

/// Records for the instances recorded in the status of one resource each.
async fn record_instances(records: &Records, instances: &[VpnInstance]) -> Result<usize> {
    let mut taken = 0;
    for i in unique_by(instances, |i| i.status.as_ref()?.instance_id.clone()) {
        let status = i.status.as_ref().expect("filtered on status");
        let kind = (
            role(status.management_policy),
            origin(i.spec.instance_id.is_some()),
        );
        let mut spec = records.new_spec(holder(i), kind.0, kind.1);
        spec.hostname = Some(i.spec.hostname.clone());
        spec.instance_id = status.instance_id.clone();
        taken += usize::from(took(
            records.take(&instance_record(&i.spec.hostname), spec).await?,
        ));
    }
    Ok(taken)
}

/// Records for the peers recorded in the status of one resource each.
async fn record_peers(records: &Records, peers: &[VpnPeer]) -> Result<usize> {
    let mut taken = 0;
    for p in unique_by(peers, |p| p.status.as_ref()?.peer_id.clone()) {
        let status = p.status.as_ref().expect("filtered on status");
        let kind = (role(status.management_policy), origin(p.spec.peer_id.is_some()));
        let mut spec = records.new_spec(holder(p), kind.0, kind.1);
        spec.instance_id = status.instance_id.clone();
        spec.peer_id = status.peer_id.clone();
        let name = peer_record(&p.uid().unwrap_or_default());
        taken += usize::from(took(records.take(&name, spec).await?));
    }
    Ok(taken)
}

fn took(holding: Holding) -> bool {
    holding.mine().is_some()
}

fn role(policy: Option<ManagementPolicy>) -> RecordRole {
    match policy {
        Some(ManagementPolicy::ObserveOnly) => RecordRole::Observe,
        _ => RecordRole::Manage,
    }
}

fn origin(adopted: bool) -> RecordOrigin {
    if adopted {
        RecordOrigin::Adopted
    } else {
        RecordOrigin::Created
    }
}

/// The resources whose id (by `id`) no other resource records too; the others are named in a
/// warning, once.
fn unique_by<K: kube::Resource>(all: &[K], id: impl Fn(&K) -> Option<String>) -> Vec<&K> {
    let mut by_id: BTreeMap<String, Vec<&K>> = BTreeMap::new();
    for obj in all {
        if let Some(id) = id(obj) {
            by_id.entry(id).or_default().push(obj);
        }
    }
    let mut unique = Vec::new();
    for (id, holders) in by_id {
        if let [one] = holders[..] {
            unique.push(one);
            continue;
        }
        let names: Vec<String> = holders
            .iter()
            .map(|h| format!("{}/{}", h.namespace().unwrap_or_default(), h.name_any()))
            .collect();
        tracing::warn!(%id, holders = ?names, "id recorded by more than one resource: no ownership record made; adopt it explicitly from one of them");
    }
    unique
}

async fn list<K>(client: &Client, scope: &WatchScope, params: &ListParams) -> Result<Vec<K>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match scope {
        WatchScope::AllNamespaces => Api::all(client.clone()),
        WatchScope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    };
    let listed = api
        .list(params)
        .await
        .map_err(Error::kube(format!("list of {}", K::kind(&()))))?;
    Ok(listed.items)
}

/// Frees, every [`SWEEP_INTERVAL`], this installation's records whose holder was gone at the
/// previous check too (a finalizer removed by hand, a namespace force-deleted): a record never
/// locks an instance forever. Runs until the process stops.
pub async fn sweep(client: Client, records: Records) {
    let mut missing_before: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(SWEEP_INTERVAL).await;
        match sweep_once(&client, &records, &missing_before).await {
            Ok(missing) => missing_before = missing,
            Err(error) => {
                tracing::info!(%error, "ownership records not checked for lost holders; retried later")
            }
        }
    }
}

/// One check: frees the records missing their holder now and at the previous check; returns the
/// names of those missing it now.
pub async fn sweep_once(
    client: &Client,
    records: &Records,
    missing_before: &HashSet<String>,
) -> Result<HashSet<String>> {
    let api: Api<OwnershipRecord> = Api::all(client.clone());
    let params = ListParams::default().labels(&format!(
        "{INSTALLATION_LABEL}={}",
        label_value(records.installation())
    ));
    let listed = api
        .list(&params)
        .await
        .map_err(Error::kube("list of OwnershipRecords"))?;
    let mut missing = HashSet::new();
    let mut exists: HashMap<(String, String, String), Option<String>> = HashMap::new();
    for record in listed
        .items
        .iter()
        .filter(|r| r.spec.installation == records.installation())
    {
        let h = &record.spec.holder;
        let key = (h.kind.clone(), h.namespace.clone(), h.name.clone());
        let uid = match exists.get(&key) {
            Some(uid) => uid.clone(),
            None => {
                let Some(uid) = holder_uid(client, h).await? else {
                    continue;
                };
                exists.insert(key, uid.clone());
                uid
            }
        };
        if uid.as_deref() == Some(h.uid.as_str()) {
            continue;
        }
        let name = record.name_any();
        if missing_before.contains(&name) {
            tracing::info!(record = %name, holder = %super::record::holder_name(h), "freed the ownership record of a holder that no longer exists");
            records.free(record).await?;
        } else {
            missing.insert(name);
        }
    }
    Ok(missing)
}

/// The uid of the resource a record names, `Some(None)` when it does not exist, `None` for
/// records whose holder is not a resource (the migration marker) or cannot be read here.
async fn holder_uid(client: &Client, h: &Holder) -> Result<Option<Option<String>>> {
    let found = match h.kind.as_str() {
        "VpnInstance" => Api::<VpnInstance>::namespaced(client.clone(), &h.namespace)
            .get_opt(&h.name)
            .await
            .map(|o| o.map(|o| o.uid())),
        "VpnPeer" => Api::<VpnPeer>::namespaced(client.clone(), &h.namespace)
            .get_opt(&h.name)
            .await
            .map(|o| o.map(|o| o.uid())),
        _ => return Ok(None),
    };
    match found {
        Ok(found) => Ok(Some(found.flatten())),
        // Outside this installation's permissions (another scope): not ours to judge.
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(None),
        Err(e) => Err(Error::kube(format!(
            "read of {} {}/{}",
            h.kind, h.namespace, h.name
        ))(e)),
    }
}
