//! The simulator's in-memory state (optionally persisted as JSON). Provisioning progress and
//! pending status entries are computed from wall-clock timestamps at read time, so no
//! background task is needed and a restarted simulator continues where it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::altostrat::model::{Instance, Peer};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An instance as stored: the configuration plus the timeline that drives its readiness.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredInstance {
    pub instance: Instance,
    /// The account of the token that created it; only that account's tokens see it.
    #[serde(default = "default_account")]
    pub account: String,
    pub provision_started_ms: u64,
    pub provision_delay_ms: u64,
    /// Pending configuration changes and when each one clears.
    pub pending: Vec<(String, u64)>,
    pub seq: u64,
    /// When an asynchronous teardown ends (milliseconds since the Unix epoch): until then the
    /// instance shows `deleting`, from then on it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown_ends_ms: Option<u64>,
}

fn default_account() -> String {
    super::DEFAULT_ACCOUNT.to_owned()
}

impl StoredInstance {
    /// The instance as the API returns it at `now`.
    pub fn view(&self, now: u64) -> Instance {
        let mut instance = self.instance.clone();
        let elapsed = now.saturating_sub(self.provision_started_ms);
        let reached =
            |quarter: u64| self.provision_delay_ms == 0 || elapsed * 4 >= self.provision_delay_ms * quarter;
        instance.configured = reached(1);
        instance.rsa_ready = reached(2);
        instance.diffie_hellman_ready = reached(3);
        instance.server_ready = reached(4);
        // Stored entries (none, unless set out of band) stay; pending ones show until they clear.
        instance.status.extend(
            self.pending
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(s, _)| s.clone()),
        );
        if self.is_deleting() {
            instance.status.push("deleting".into());
        }
        instance
    }

    pub fn is_deleting(&self) -> bool {
        self.teardown_ends_ms.is_some()
    }

    /// Starts the teardown; a repeated DELETE keeps the end the first one set.
    pub fn start_teardown(&mut self, teardown: Duration, now: u64) {
        self.teardown_ends_ms
            .get_or_insert(now + teardown.as_millis() as u64);
    }

    pub fn add_pending(&mut self, entry: &str, clear_after: Duration, now: u64) {
        self.pending.retain(|(_, until)| *until > now);
        if clear_after.is_zero() {
            return;
        }
        let until = now + clear_after.as_millis() as u64;
        match self.pending.iter_mut().find(|(s, _)| s == entry) {
            Some(p) => p.1 = until,
            None => self.pending.push((entry.to_owned(), until)),
        }
    }
}

/// A site never configured offers two adjacent /24s in 10.0.0.0/8 picked by the first bytes
/// of its id: stable across restarts and different for most sites.
pub fn default_site_subnets(site_id: &str) -> Vec<String> {
    let bytes = uuid::Uuid::parse_str(site_id)
        .map(|u| *u.as_bytes())
        .unwrap_or_default();
    let (b, c) = (bytes[0], bytes[1] & 0xfe);
    vec![format!("10.{b}.{c}.0/24"), format!("10.{b}.{}.0/24", c + 1)]
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredPeer {
    pub instance_id: String,
    pub peer: Peer,
    pub seq: u64,
    /// A peer of a kind the docs do not list (see `render::foreign_peer`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub foreign: bool,
    /// Share tokens carry the generation they were issued in; expiring them all through the
    /// admin API moves it on (see `share`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token_generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Who a peer belongs to: an Altostrat user (client peers) or site (site peers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    User,
    Site,
}

impl Owner {
    /// The owner a peer names, with its id.
    pub fn of(peer: &Peer) -> Option<(Self, &str)> {
        match (&peer.user_id, &peer.site_id) {
            (Some(user), _) => Some((Self::User, user)),
            (None, Some(site)) => Some((Self::Site, site)),
            (None, None) => None,
        }
    }

    /// The create-peer field that names it.
    pub fn field(self) -> &'static str {
        match self {
            Self::User => "user_id",
            Self::Site => "site_id",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Site => "site",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub instances: BTreeMap<String, StoredInstance>,
    pub peers: BTreeMap<String, StoredPeer>,
    pub next_seq: u64,
    /// Users deleted out of band (lowercase ids): their peers are gone and cannot come back.
    #[serde(default)]
    pub deleted_users: BTreeSet<String>,
    /// Sites deleted out of band (lowercase ids).
    #[serde(default)]
    pub deleted_sites: BTreeSet<String>,
    /// The subnets available at each site set through the admin API (lowercase ids); a site
    /// not listed has [`default_site_subnets`].
    #[serde(default)]
    pub site_subnets: BTreeMap<String, Vec<String>>,
}

impl State {
    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Instance `id` as `account` sees it: another account's instance does not exist for it.
    pub fn instance_of(&self, account: &str, id: &str) -> Option<&StoredInstance> {
        self.instances.get(id).filter(|i| i.account == account)
    }

    pub fn instance_of_mut(&mut self, account: &str, id: &str) -> Option<&mut StoredInstance> {
        self.instances.get_mut(id).filter(|i| i.account == account)
    }

    pub fn instances_in_order(&self) -> Vec<&StoredInstance> {
        let mut all: Vec<_> = self.instances.values().collect();
        all.sort_by_key(|i| i.seq);
        all
    }

    /// The peers of an instance in creation order, to be shown (a read may re-issue tokens).
    pub fn peers_of_mut(&mut self, instance_id: &str) -> Vec<&mut StoredPeer> {
        let mut all: Vec<_> = self
            .peers
            .values_mut()
            .filter(|p| p.instance_id == instance_id)
            .collect();
        all.sort_by_key(|p| p.seq);
        all
    }

    /// Removes an instance and its peers.
    pub fn remove_instance(&mut self, id: &str) {
        self.instances.remove(id);
        self.peers.retain(|_, p| p.instance_id != id);
    }

    /// Removes the instances whose teardown has ended by `now`; true if any was.
    pub fn sweep(&mut self, now: u64) -> bool {
        let ended: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| i.teardown_ends_ms.is_some_and(|end| end <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ended {
            self.remove_instance(id);
        }
        !ended.is_empty()
    }

    fn deleted(&self, owner: Owner) -> &BTreeSet<String> {
        match owner {
            Owner::User => &self.deleted_users,
            Owner::Site => &self.deleted_sites,
        }
    }

    pub fn is_deleted(&self, owner: Owner, id: &str) -> bool {
        self.deleted(owner).contains(&id.to_ascii_lowercase())
    }

    /// Removes every peer of a user or site on every instance of every account, marks each
    /// instance that lost one `peer-deleted`, and remembers the id as deleted.
    pub fn delete_owner(&mut self, owner: Owner, id: &str, clear_after: Duration, now: u64) {
        let owned = |p: &StoredPeer| {
            Owner::of(&p.peer).is_some_and(|(o, of)| o == owner && of.eq_ignore_ascii_case(id))
        };
        let affected: BTreeSet<String> = self
            .peers
            .values()
            .filter(|p| owned(p))
            .map(|p| p.instance_id.clone())
            .collect();
        self.peers.retain(|_, p| !owned(p));
        for instance_id in &affected {
            if let Some(instance) = self.instances.get_mut(instance_id) {
                instance.add_pending("peer-deleted", clear_after, now);
            }
        }
        let deleted = match owner {
            Owner::User => &mut self.deleted_users,
            Owner::Site => &mut self.deleted_sites,
        };
        deleted.insert(id.to_ascii_lowercase());
    }

    /// The subnets available at a site, whatever its peers say: as set through the admin API,
    /// else derived from its id. `None` for a site deleted out of band.
    pub fn site_subnets(&self, site_id: &str) -> Option<Vec<String>> {
        let id = site_id.to_ascii_lowercase();
        if self.deleted_sites.contains(&id) {
            return None;
        }
        Some(
            self.site_subnets
                .get(&id)
                .cloned()
                .unwrap_or_else(|| default_site_subnets(&id)),
        )
    }

    /// Hostnames are unique across all accounts.
    pub fn hostname_taken(&self, label: &str) -> bool {
        self.instances
            .values()
            .any(|i| i.instance.hostname_label() == label)
    }

    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes atomically: a crash never leaves a half-written state file.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(delay_ms: u64) -> StoredInstance {
        StoredInstance {
            instance: Instance {
                id: "i".into(),
                hostname: "hub.vpn.altostr.at".into(),
                ..Instance::default()
            },
            account: crate::simulator::DEFAULT_ACCOUNT.into(),
            provision_started_ms: 1_000,
            provision_delay_ms: delay_ms,
            pending: vec![],
            seq: 1,
            teardown_ends_ms: None,
        }
    }

    #[test]
    fn readiness_flags_flip_in_order_over_the_delay() {
        let s = stored(4_000);
        let flags = |now| {
            let v = s.view(now);
            (v.configured, v.rsa_ready, v.diffie_hellman_ready, v.server_ready)
        };
        assert_eq!(flags(1_000), (false, false, false, false));
        assert_eq!(flags(2_000), (true, false, false, false));
        assert_eq!(flags(3_500), (true, true, false, false));
        assert_eq!(flags(4_000), (true, true, true, false));
        assert_eq!(flags(5_000), (true, true, true, true));
        assert!(stored(0).view(1_000).server_ready, "zero delay is ready at once");
    }

    #[test]
    fn pending_entries_clear_after_their_delay() {
        let mut s = stored(0);
        s.add_pending("config-updated", Duration::from_millis(500), 10_000);
        assert_eq!(s.view(10_100).status, vec!["config-updated"]);
        assert!(s.view(10_500).status.is_empty());
    }

    #[test]
    fn state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = State::default();
        let seq = state.next_seq();
        state
            .instances
            .insert("i".into(), StoredInstance { seq, ..stored(10) });
        state.save(&path).unwrap();
        let loaded = State::load(&path).unwrap();
        assert!(loaded.hostname_taken("hub"));
        assert_eq!(loaded.next_seq, 1);
        assert!(
            !serde_json::to_string(&loaded).unwrap().contains("teardown"),
            "a state file without teardowns keeps its shape"
        );
        assert!(
            State::load(&dir.path().join("missing.json"))
                .unwrap()
                .instances
                .is_empty()
        );
    }

    #[test]
    fn a_teardown_ends_once_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = State::default();
        state.instances.insert("i".into(), stored(0));
        state.peers.insert(
            "p".into(),
            StoredPeer {
                instance_id: "i".into(),
                peer: Peer::default(),
                seq: 2,
                foreign: false,
                token_generation: 0,
            },
        );
        let teardown = Duration::from_millis(1_000);
        state
            .instances
            .get_mut("i")
            .unwrap()
            .start_teardown(teardown, 10_000);
        state
            .instances
            .get_mut("i")
            .unwrap()
            .start_teardown(teardown, 10_600);
        assert_eq!(state.instances["i"].view(10_700).status, vec!["deleting"]);
        state.save(&path).unwrap();

        let mut loaded = State::load(&path).unwrap();
        assert!(!loaded.sweep(10_999), "still tearing down");
        assert!(loaded.hostname_taken("hub"), "the hostname stays taken meanwhile");
        assert!(loaded.sweep(11_000), "a repeated DELETE did not move the end");
        assert!(loaded.instances.is_empty() && loaded.peers.is_empty());
        assert!(!loaded.hostname_taken("hub"));
    }

    #[test]
    fn a_site_offers_its_own_subnets_until_it_is_deleted() {
        let site = "C3D5E2A0-88C9-4F7F-9F7B-6A1E2B4C5D6E";
        let mut state = State::default();
        assert_eq!(
            state.site_subnets(site),
            Some(vec!["10.195.212.0/24".to_owned(), "10.195.213.0/24".to_owned()]),
            "from the bytes c3 d5 of the id, whatever its case"
        );
        state
            .site_subnets
            .insert(site.to_ascii_lowercase(), vec!["192.168.1.0/24".into()]);
        assert_eq!(state.site_subnets(site).unwrap(), vec!["192.168.1.0/24"]);
        state.delete_owner(Owner::Site, site, Duration::ZERO, 0);
        assert_eq!(state.site_subnets(site), None);
    }
}
