//! What Altostrat holds, observed by list and shared by every reconcile.
//!
//! One `GET /vpn/instances` per token refreshes the view of all that token's instances, and one
//! `GET /vpn/instances/{id}/peers` all of an instance's peers. A reconcile asks for an object
//! with a freshness (a list sent no earlier than some instant) and an [`Urgency`]; it is
//! answered from the shared view when that is fresh enough, and concurrent askers of the same
//! list share one call. Writes are folded into the view as their answers arrive, so a list that
//! was in flight during a write never brings back what the write replaced.
//!
//! An object missing from a list is confirmed with a GET on its id before anyone treats it as
//! gone. A refreshed list that shows an object changed, or gone, is announced on
//! [`Observations::subscribe`], so its resource is reconciled at once rather than at its next
//! scheduled look.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::runtime::controller::Action;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::error::{Error, Result};
use crate::altostrat::model::{Instance, Peer};
use crate::altostrat::{ApiError, ApiResult, ApiToken, Caller, Urgency, VpnApi};

/// An Altostrat object a list refresh found changed or gone since the previous one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    Instance(String),
    Peer(String),
}

/// How fresh an observation must be, and how urgent the calls made for it are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    /// A list sent before this instant is too old.
    pub fresh_since: Instant,
    pub urgency: Urgency,
}

impl Look {
    /// Accepts a list up to `max_age` old.
    pub fn within(max_age: Duration, urgency: Urgency) -> Self {
        let now = Instant::now();
        Self {
            fresh_since: now.checked_sub(max_age).unwrap_or(now),
            urgency,
        }
    }

    /// Needs a list sent from now on (after a claim, to find a create that may have been applied).
    pub fn fresh(urgency: Urgency) -> Self {
        Self::within(Duration::ZERO, urgency)
    }
}

/// A drift check the budget could not fit now is put off without a word: the object is
/// converged and nothing waits for it. Any other failed look is an error the status shows.
pub(crate) fn defer_drift_check(error: Error, look: Look) -> Result<Action> {
    match &error {
        Error::Api(ApiError::Throttled { expected_wait, .. }) if look.urgency == Urgency::Drift => {
            Ok(Action::requeue(*expected_wait))
        }
        _ => Err(error),
    }
}

/// An object as a list shows it, compared by what a resource mirrors of it.
trait Listed: Clone + Send + Sync + 'static {
    fn id(&self) -> &str;
    fn same_as(&self, other: &Self) -> bool;
    fn changed(id: String) -> Changed;
}

impl Listed for Instance {
    fn id(&self) -> &str {
        &self.id
    }
    fn same_as(&self, other: &Self) -> bool {
        self == other
    }
    fn changed(id: String) -> Changed {
        Changed::Instance(id)
    }
}

impl Listed for Peer {
    fn id(&self) -> &str {
        &self.id
    }
    /// The share token is re-issued on its own schedule and mirrored nowhere.
    fn same_as(&self, other: &Self) -> bool {
        let without_token = |p: &Peer| Peer {
            token: None,
            token_ttl: None,
            ..p.clone()
        };
        without_token(self) == without_token(other)
    }
    fn changed(id: String) -> Changed {
        Changed::Peer(id)
    }
}

/// One object in a view: its value, or `None` once it is known to be deleted, and when that
/// was learnt (a list's send time, or the arrival of a write's answer).
#[derive(Clone, Debug)]
struct Entry<T> {
    value: Option<T>,
    as_of: Instant,
}

/// The view one list keeps fresh.
#[derive(Debug)]
struct View<T> {
    /// When the last list was sent; `None`: never listed.
    listed_at: Option<Instant>,
    /// The last list answered 404: the parent (the instance of a peer list) is gone.
    parent_gone: bool,
    items: HashMap<String, Entry<T>>,
    last_wanted: Instant,
    /// The budget held this list back until then: everyone asking before is told the same,
    /// so the askers of one list wait for one slot, not one each.
    held_back: Option<HeldBack>,
}

/// Until when the budget held a list back, for askers of which urgency, and its endpoint.
#[derive(Clone, Copy, Debug)]
struct HeldBack {
    until: Instant,
    urgency: Urgency,
    endpoint: crate::altostrat::Endpoint,
}

impl<T: Listed> View<T> {
    fn new(now: Instant) -> Self {
        Self {
            listed_at: None,
            parent_gone: false,
            items: HashMap::new(),
            last_wanted: now,
            held_back: None,
        }
    }

    fn is_fresh(&self, look: &Look) -> bool {
        self.listed_at.is_some_and(|at| at >= look.fresh_since)
    }

    /// Folds in a list sent at `sent`; what was learnt after it was sent is kept. Returns the
    /// objects that changed or went away since the previous list.
    fn merge(&mut self, sent: Instant, listed: Option<Vec<T>>) -> Vec<Changed> {
        let first = self.listed_at.is_none();
        self.parent_gone = listed.is_none();
        let mut listed: HashMap<String, T> = listed
            .unwrap_or_default()
            .into_iter()
            .map(|item| (item.id().to_owned(), item))
            .collect();
        let mut changed = Vec::new();
        self.items.retain(|id, entry| {
            if entry.as_of > sent {
                listed.remove(id);
                return true;
            }
            match (listed.remove(id), &entry.value) {
                (Some(now), Some(before)) => {
                    if !now.same_as(before) {
                        changed.push(T::changed(id.clone()));
                    }
                    *entry = Entry {
                        value: Some(now),
                        as_of: sent,
                    };
                    true
                }
                (Some(now), None) => {
                    *entry = Entry {
                        value: Some(now),
                        as_of: sent,
                    };
                    true
                }
                (None, before) => {
                    if before.is_some() && !first {
                        changed.push(T::changed(id.clone()));
                    }
                    false
                }
            }
        });
        for (id, value) in listed {
            let entry = Entry {
                value: Some(value),
                as_of: sent,
            };
            self.items.insert(id, entry);
        }
        self.listed_at = Some(self.listed_at.map_or(sent, |at| at.max(sent)));
        changed
    }

    fn note(&mut self, id: &str, value: Option<T>, as_of: Instant) {
        self.items.insert(id.to_owned(), Entry { value, as_of });
    }
}

/// What the view says of one object.
enum Seen<T> {
    Found(T),
    Gone,
    /// Not in the list: confirm with a GET before believing it gone.
    Missing,
}

/// One list's view and the lock that makes concurrent refreshes one call.
struct Slot<T> {
    refresh: tokio::sync::Mutex<()>,
    view: Mutex<View<T>>,
}

impl<T: Listed> Slot<T> {
    fn new(now: Instant) -> Self {
        Self {
            refresh: tokio::sync::Mutex::new(()),
            view: Mutex::new(View::new(now)),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View<T>> {
        self.view.lock().expect("observation lock poisoned")
    }

    /// What the view holds of `id` when that was learnt recently enough for `look` (a write's
    /// answer, a confirming GET), so that no list is needed for it.
    fn recent(&self, id: &str, look: &Look) -> Option<Option<T>> {
        let view = self.view();
        let entry = view.items.get(id)?;
        (entry.as_of >= look.fresh_since).then(|| entry.value.clone())
    }

    fn seen(&self, id: &str) -> Seen<T> {
        let view = self.view();
        match view.items.get(id) {
            Some(Entry { value: Some(v), .. }) => Seen::Found(v.clone()),
            Some(Entry { value: None, .. }) => Seen::Gone,
            None if view.parent_gone => Seen::Gone,
            None => Seen::Missing,
        }
    }

    fn all(&self) -> Option<Vec<T>> {
        let view = self.view();
        if view.parent_gone {
            return None;
        }
        Some(view.items.values().filter_map(|e| e.value.clone()).collect())
    }

    /// Makes the view at least as fresh as `look` asks, with one list call shared by everyone
    /// asking at the same time. A list answering 404 means the parent is gone.
    async fn refresh<F, Fut>(&self, look: &Look, list: F) -> ApiResult<Vec<Changed>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ApiResult<Vec<T>>>,
    {
        self.view().last_wanted = Instant::now();
        if self.view().is_fresh(look) {
            return Ok(Vec::new());
        }
        let _one_at_a_time = self.refresh.lock().await;
        if self.view().is_fresh(look) {
            return Ok(Vec::new());
        }
        if let Some(held) = self.still_held_back(look.urgency) {
            return Err(held);
        }
        let sent = Instant::now();
        let listed = match look.urgency.scope(list()).await {
            Ok(items) => Some(items),
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                if let ApiError::Throttled {
                    expected_wait,
                    endpoint,
                } = &e
                {
                    self.view().held_back = Some(HeldBack {
                        until: sent + *expected_wait,
                        urgency: look.urgency,
                        endpoint: *endpoint,
                    });
                }
                return Err(e);
            }
        };
        Ok(self.view().merge(sent, listed))
    }

    /// The answer every asker of `urgency` (or less urgent) gets while the budget holds this
    /// list back; a more urgent asker goes to the budget itself.
    fn still_held_back(&self, urgency: Urgency) -> Option<ApiError> {
        let now = Instant::now();
        let held = self
            .view()
            .held_back
            .filter(|h| h.until > now && urgency >= h.urgency)?;
        Some(ApiError::Throttled {
            endpoint: held.endpoint,
            expected_wait: held.until - now,
        })
    }
}

type Slots<K, T> = Mutex<HashMap<K, Arc<Slot<T>>>>;

/// The shared view of Altostrat, per token.
pub struct Observations {
    instances: Slots<ApiToken, Instance>,
    peers: Slots<(ApiToken, String), Peer>,
    changes: broadcast::Sender<Changed>,
    drift_cycles: Mutex<HashMap<ApiToken, Duration>>,
    /// Per object id: the last update sent, what the fields it sets held before, and the state
    /// Altostrat answered it with (hashes).
    updates: Mutex<HashMap<String, LastUpdate>>,
}

impl Default for Observations {
    fn default() -> Self {
        Self {
            instances: Mutex::default(),
            peers: Mutex::default(),
            changes: broadcast::channel(4096).0,
            drift_cycles: Mutex::default(),
            updates: Mutex::default(),
        }
    }
}

/// Views nobody asked for in this long are dropped (their objects were deleted or moved).
const UNWANTED_AFTER: Duration = Duration::from_secs(6 * 3600);

fn slot<K: std::hash::Hash + Eq + Clone, T: Listed>(slots: &Slots<K, T>, key: &K) -> Arc<Slot<T>> {
    let mut slots = slots.lock().expect("observation lock poisoned");
    let now = Instant::now();
    if slots.len() > 64 && slots.len().is_power_of_two() {
        slots.retain(|_, s| Arc::strong_count(s) > 1 || now - s.view().last_wanted < UNWANTED_AFTER);
    }
    slots
        .entry(key.clone())
        .or_insert_with(|| Arc::new(Slot::new(now)))
        .clone()
}

impl Observations {
    /// Objects that a list refresh found changed or gone.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    /// Object `id` of one view: what was learnt of it recently enough, else from a list as
    /// fresh as `look` asks; missing from that list, confirmed by `get` (a poll: something
    /// waits for the answer).
    async fn find<T, L, LF, G, GF>(
        &self,
        slot: &Slot<T>,
        id: &str,
        look: Look,
        list: L,
        get: G,
    ) -> ApiResult<Option<T>>
    where
        T: Listed,
        L: FnOnce() -> LF,
        LF: Future<Output = ApiResult<Vec<T>>>,
        G: FnOnce() -> GF,
        GF: Future<Output = ApiResult<T>>,
    {
        if let Some(known) = slot.recent(id, &look) {
            return Ok(known);
        }
        let changed = slot.refresh(&look, list).await?;
        self.announce(changed);
        match slot.seen(id) {
            Seen::Found(found) => Ok(Some(found)),
            Seen::Gone => Ok(None),
            Seen::Missing => confirm(slot, id, Urgency::Poll.scope(get()).await),
        }
    }

    fn announce(&self, changed: Vec<Changed>) {
        for change in changed {
            let _ = self.changes.send(change);
        }
    }

    /// The instance `id`, or `None` once Altostrat confirmed it gone.
    pub async fn instance<A: VpnApi>(
        &self,
        api: &A,
        token: &ApiToken,
        id: &str,
        look: Look,
    ) -> ApiResult<Option<Instance>> {
        let slot = slot(&self.instances, token);
        // The list serves the token's instances in every namespace: no one namespace pays.
        let list = || Caller::shared().scope(api.list_instances(token));
        self.find(&slot, id, look, list, || api.get_instance(token, id))
            .await
    }

    /// The instance `id` from a GET on its id, folded into the view: for one object just
    /// written, one call where a fresh list would take two (the list, then a GET to confirm an
    /// absence).
    pub async fn instance_now<A: VpnApi>(
        &self,
        api: &A,
        token: &ApiToken,
        id: &str,
    ) -> ApiResult<Option<Instance>> {
        let slot = slot(&self.instances, token);
        confirm(&slot, id, Urgency::Poll.scope(api.get_instance(token, id)).await)
    }

    /// The instance `id` as the view holds it, if learnt within `look` and `accept`ed; never
    /// makes a call.
    pub fn cached_instance(
        &self,
        token: &ApiToken,
        id: &str,
        look: &Look,
        accept: impl Fn(&Instance) -> bool,
    ) -> Option<Instance> {
        let slot = slot(&self.instances, token);
        let view = slot.view();
        let entry = view.items.get(id)?;
        let fresh = entry.as_of >= look.fresh_since;
        entry.value.clone().filter(|i| fresh && accept(i))
    }

    /// Every instance the token can list, as fresh as `look` asks.
    pub async fn instances<A: VpnApi>(
        &self,
        api: &A,
        token: &ApiToken,
        look: Look,
    ) -> ApiResult<Vec<Instance>> {
        let slot = slot(&self.instances, token);
        let list = || Caller::shared().scope(api.list_instances(token));
        let changed = slot.refresh(&look, list).await?;
        self.announce(changed);
        Ok(slot.all().unwrap_or_default())
    }

    /// The peer `id` of `instance_id`, or `None` once Altostrat confirmed it gone.
    pub async fn peer<A: VpnApi>(
        &self,
        api: &A,
        token: &ApiToken,
        instance_id: &str,
        id: &str,
        look: Look,
    ) -> ApiResult<Option<Peer>> {
        let slot = slot(&self.peers, &(token.clone(), instance_id.to_owned()));
        let list = || api.list_peers(token, instance_id, None);
        self.find(&slot, id, look, list, || api.get_peer(token, instance_id, id))
            .await
    }

    /// The peer `id` from a GET on its id, folded into the view (see [`Self::instance_now`]).
    pub async fn peer_now<A: VpnApi>(
        &self,
        api: &A,
        token: &ApiToken,
        instance_id: &str,
        id: &str,
    ) -> ApiResult<Option<Peer>> {
        let slot = slot(&self.peers, &(token.clone(), instance_id.to_owned()));
        let got = Urgency::Poll.scope(api.get_peer(token, instance_id, id)).await;
        confirm(&slot, id, got)
    }

    /// Every peer of `instance_id`; `None` when the instance itself is gone.
    pub async fn peers<A: VpnApi>(
        &self,
        api: &A,
        token: &ApiToken,
        instance_id: &str,
        look: Look,
    ) -> ApiResult<Option<Vec<Peer>>> {
        let slot = slot(&self.peers, &(token.clone(), instance_id.to_owned()));
        let changed = slot
            .refresh(&look, || api.list_peers(token, instance_id, None))
            .await?;
        self.announce(changed);
        Ok(slot.all())
    }

    /// A create or update answered with `instance`.
    pub fn wrote_instance(&self, token: &ApiToken, instance: &Instance) {
        let slot = slot(&self.instances, token);
        slot.view()
            .note(&instance.id, Some(instance.clone()), Instant::now());
    }

    /// Whether Altostrat already answered that instance `id` is gone (a delete of ours, a
    /// 404): a second cleanup of a resource, run on a copy older than its first cleanup's
    /// release, then sends no second DELETE.
    pub fn instance_known_gone(&self, token: &ApiToken, id: &str) -> bool {
        matches!(slot(&self.instances, token).seen(id), Seen::Gone)
    }

    /// The same for peer `id` of `instance_id` (its instance's peer list answering 404 counts).
    pub fn peer_known_gone(&self, token: &ApiToken, instance_id: &str, id: &str) -> bool {
        let slot = slot(&self.peers, &(token.clone(), instance_id.to_owned()));
        matches!(slot.seen(id), Seen::Gone)
    }

    /// A delete of instance `id` was answered (done, or already gone).
    pub fn deleted_instance(&self, token: &ApiToken, id: &str) {
        slot(&self.instances, token).view().note(id, None, Instant::now());
        self.peers
            .lock()
            .expect("observation lock poisoned")
            .remove(&(token.clone(), id.to_owned()));
    }

    pub fn wrote_peer(&self, token: &ApiToken, instance_id: &str, peer: &Peer) {
        let slot = slot(&self.peers, &(token.clone(), instance_id.to_owned()));
        slot.view().note(&peer.id, Some(peer.clone()), Instant::now());
    }

    pub fn deleted_peer(&self, token: &ApiToken, instance_id: &str, id: &str) {
        slot(&self.peers, &(token.clone(), instance_id.to_owned()))
            .view()
            .note(id, None, Instant::now());
    }

    /// Forgets everything observed, as if the drift interval had passed for every object.
    #[cfg(test)]
    pub fn forget_all(&self) {
        self.instances.lock().unwrap().clear();
        self.peers.lock().unwrap().clear();
    }

    /// The lists one full observation of `token`'s objects takes: its instance list, and one
    /// peer list per instance whose peers are observed.
    pub fn lists_per_cycle(&self, token: &ApiToken) -> usize {
        let peer_lists = self
            .peers
            .lock()
            .expect("observation lock poisoned")
            .keys()
            .filter(|(t, _)| t == token)
            .count();
        1 + peer_lists
    }
}

fn digest(value: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(value).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

/// The last update sent to one object (hashes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LastUpdate {
    body: u64,
    /// What the fields the update sets held before it.
    before: u64,
    answer: u64,
}

/// Why sending an update again would not converge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Altostrat still holds exactly what it answered the same update with: it normalised the
    /// value, and sending it again would change nothing but cost a call, forever.
    Normalised,
    /// The fields hold again what they held before the same update: someone else writes them
    /// back (A→B→A), and sending it again would start a war with them.
    Reverted,
}

impl Observations {
    /// Remembers that `body` was sent to object `id`, whose fields held `before`, and was
    /// answered with an object whose fields hold `answer`. Fields, not whole objects: what
    /// Altostrat reports besides (pending changes, connection state) moves on by itself.
    pub fn updated(
        &self,
        id: &str,
        body: &impl serde::Serialize,
        before: &impl serde::Serialize,
        answer: &impl serde::Serialize,
    ) {
        let mut updates = self.updates.lock().expect("observation lock poisoned");
        if updates.len() > 100_000 {
            updates.clear();
        }
        let last = LastUpdate {
            body: digest(body),
            before: digest(before),
            answer: digest(answer),
        };
        updates.insert(id.to_owned(), last);
    }

    /// Whether sending `body` to `id` again, to an object whose fields hold `fields`, would
    /// repeat the last update without converging. Holding what the update was answered with
    /// comes first: a value Altostrat normalises back to what it held before is no war.
    pub fn would_repeat(
        &self,
        id: &str,
        body: &impl serde::Serialize,
        fields: &impl serde::Serialize,
    ) -> Option<Repeat> {
        let updates = self.updates.lock().expect("observation lock poisoned");
        let last = updates.get(id).filter(|last| last.body == digest(body))?;
        if last.answer == digest(fields) {
            Some(Repeat::Normalised)
        } else if last.before == digest(fields) {
            Some(Repeat::Reverted)
        } else {
            None
        }
    }

    /// Records `token`'s drift cycle; returns the longest of all tokens.
    pub fn note_drift_cycle(&self, token: &ApiToken, cycle: Duration) -> Duration {
        let mut cycles = self.drift_cycles.lock().expect("observation lock poisoned");
        cycles.insert(token.clone(), cycle);
        cycles.values().copied().max().unwrap_or(cycle)
    }
}

/// Records what a GET on an id missing from a list answered.
fn confirm<T: Listed>(slot: &Slot<T>, id: &str, got: ApiResult<T>) -> ApiResult<Option<T>> {
    let now = Instant::now();
    match got {
        Ok(found) => {
            slot.view().note(id, Some(found.clone()), now);
            Ok(Some(found))
        }
        Err(ApiError::NotFound { .. }) => {
            slot.view().note(id, None, now);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
