//! Wiring of one watch scope: reflectors, the triggers between the kinds, and both controllers.

use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Config;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::context::{Context, Settings};
use super::default_token::DefaultToken;
use super::events::reason as event;
use super::finalizer::has_finalizer;
use super::lifecycle::{Managed, error_policy, reconcile};
use super::observation::{Changed, Observations};
use super::peer;
use super::policy::annotation;
use crate::altostrat::VpnApi;
use crate::crd::{APPROVE_PLAN_ANNOTATION, FINALIZER, PAUSED_ANNOTATION, RECONCILE_REQUEST_ANNOTATION};
use crate::crd::{VpnInstance, VpnPeer};
use crate::metrics::Metrics;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};

/// Where the controllers look for resources.
#[derive(Clone, Debug)]
pub enum WatchScope {
    AllNamespaces,
    Namespace(String),
}

impl WatchScope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match self {
            Self::AllNamespaces => Api::all(client.clone()),
            Self::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

/// What the controllers of every watch scope share.
pub struct ControllerDeps<A> {
    pub client: Client,
    pub api: Arc<A>,
    pub observations: Arc<Observations>,
    pub default_token: Arc<DefaultToken>,
    /// The VpnCredentials: filled by `credentials::run`, which runs once per process.
    pub shared: Arc<super::credentials::SharedCredentials>,
    pub metrics: Arc<Metrics>,
    /// The reconciles running now, shared with `/healthz`.
    pub running: Arc<crate::server::InFlight>,
    pub settings: Settings,
    pub reporter: Reporter,
    /// What every scope of the process shares (see [`Scopes`]).
    pub scopes: Arc<Scopes>,
}

/// What the watch scopes of one process share: each scope's peer cache (added when it starts),
/// and each scope's instance changes, since a peer may name a hub another scope watches.
pub struct Scopes {
    peers: super::context::PeerScopes,
    instance_changes: tokio::sync::broadcast::Sender<(ObjectRef<VpnInstance>, Concerns)>,
}

impl Default for Scopes {
    fn default() -> Self {
        Self {
            peers: Default::default(),
            instance_changes: tokio::sync::broadcast::channel(1024).0,
        }
    }
}

impl<A> Clone for ControllerDeps<A> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            api: self.api.clone(),
            observations: self.observations.clone(),
            default_token: self.default_token.clone(),
            shared: self.shared.clone(),
            metrics: self.metrics.clone(),
            running: self.running.clone(),
            settings: self.settings.clone(),
            reporter: self.reporter.clone(),
            scopes: self.scopes.clone(),
        }
    }
}

/// Drops what the operator never reads from cached objects.
fn slim<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Changes that need a reconcile: the spec (generation), deletion, the pause annotation, the
/// reconcile request annotation and the plan approval annotation.
/// Status and finalizer updates — including the operator's own — do not: a reconcile goes on
/// with the object its own writes returned, polling and resyncs are scheduled explicitly, and
/// so an own write never causes another round of API calls on a cache that has not caught up
/// with it.
fn needs_reconcile<K: Resource>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = obj.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (meta.generation, meta.deletion_timestamp.is_some()).hash(&mut hasher);
    annotation(obj, PAUSED_ANNOTATION).hash(&mut hasher);
    annotation(obj, RECONCILE_REQUEST_ANNOTATION).hash(&mut hasher);
    annotation(obj, APPROVE_PLAN_ANNOTATION).hash(&mut hasher);
    Some(hasher.finish())
}

fn watch_config(settings: &Settings) -> watcher::Config {
    let config = watcher::Config::default().any_semantic();
    match &settings.label_selector {
        Some(selector) => config.labels(selector),
        None => config,
    }
}

// Each controller is fed by its own reflector so that the cached copies can be slimmed
// (managedFields and kubectl's last-applied annotation are never read but dominate the memory
// of large fleets) and so that only changes that need a reconcile trigger one.

/// The instance watch, filling `writer`. An instance event that changes what its peers depend
/// on (see [`PeerRelevant`]) is also sent to `changed`, so that peers are re-triggered from
/// this one watch instead of a second one: an instance may have become usable, or gone. Its
/// own status writes otherwise do not re-run its peers. The channel is unbounded so that a busy
/// peer queue never stalls the instance controller; it holds one reference per event at most.
fn instance_stream(
    api: Api<VpnInstance>,
    config: watcher::Config,
    writer: reflector::store::Writer<VpnInstance>,
    (changed, gone): (
        futures::channel::mpsc::UnboundedSender<(ObjectRef<VpnInstance>, Concerns)>,
        futures::channel::mpsc::UnboundedSender<VpnInstance>,
    ),
    left: LeftScope,
) -> impl Stream<Item = Result<VpnInstance, watcher::Error>> {
    let mut seen = PeerRelevant::default();
    watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect_ok(move |event| {
            report_left_scope(event, &left);
            let changed_instance = match event {
                watcher::Event::Apply(instance) | watcher::Event::InitApply(instance) => {
                    seen.changed(instance).map(|concerns| (instance, concerns))
                }
                watcher::Event::Delete(instance) => {
                    seen.forget(instance);
                    let _ = gone.unbounded_send(instance.clone());
                    Some((instance, Concerns::AllPeers))
                }
                watcher::Event::Init | watcher::Event::InitDone => None,
            };
            if let Some((instance, concerns)) = changed_instance {
                let _ = changed.unbounded_send((ObjectRef::from_obj(instance), concerns));
            }
        })
        .applied_objects()
        .predicate_filter(needs_reconcile, PredicateConfig::default())
}

fn peer_stream(
    api: Api<VpnPeer>,
    config: watcher::Config,
    writer: reflector::store::Writer<VpnPeer>,
    left: LeftScope,
) -> impl Stream<Item = Result<VpnPeer, watcher::Error>> {
    watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .inspect_ok(move |event| report_left_scope(event, &left))
        .applied_objects()
        .predicate_filter(needs_reconcile, PredicateConfig::default())
}

/// Objects that left the operator's scope while holding its finalizer.
type LeftScope = futures::channel::mpsc::UnboundedSender<ObjectReference>;

/// A watch reports an object gone without its deletion when it no longer matches the label
/// selector. If it holds the cleanup finalizer, deleting it would wait for an operator that no
/// longer sees it: that is worth a warning on the object.
fn report_left_scope<K: Resource<DynamicType = ()>>(event: &watcher::Event<K>, left: &LeftScope) {
    if let watcher::Event::Delete(obj) = event
        && obj.meta().deletion_timestamp.is_none()
        && has_finalizer(obj)
    {
        let _ = left.unbounded_send(obj.object_ref(&()));
    }
}

/// Publishes the warnings [`report_left_scope`] queued, until the watches end.
async fn warn_left_scope<A>(
    mut left: futures::channel::mpsc::UnboundedReceiver<ObjectReference>,
    ctx: Arc<Context<A>>,
) {
    while let Some(reference) = left.next().await {
        let note = format!(
            "no longer matched by the operator's label selector while it holds the finalizer {FINALIZER}: \
             its deletion waits until it matches again, or until the finalizer is removed by hand \
             (which leaves its Altostrat object behind)"
        );
        ctx.warn(reference, event::LEFT_SCOPE, note).await;
    }
}

/// What the peers of an instance depend on, per instance as last seen: the Altostrat id,
/// whether its server is ready (see `peer::usable_instance_id`), deletion, credentials and the
/// namespaces it admits peers of;
/// and, for peers delivering a profile, the generation whose changes Altostrat has applied (a
/// profile may have changed with it). Other changes (conditions' messages, observed
/// configuration, the operator's own status writes) do not concern them.
#[derive(Default)]
struct PeerRelevant(std::collections::HashMap<ObjectRef<VpnInstance>, (u64, Option<i64>)>);

/// Which peers of an instance a change concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Concerns {
    AllPeers,
    /// Only peers with `spec.profileSecret`.
    Profiles,
}

impl PeerRelevant {
    /// What all its peers depend on (hashed), and the generation whose changes Altostrat has
    /// applied (what profiles depend on).
    fn fingerprints(instance: &VpnInstance) -> (u64, Option<i64>) {
        use std::hash::{Hash, Hasher};
        let status = instance.status.as_ref();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            instance.metadata.uid.as_deref(),
            status.and_then(|s| s.instance_id.as_deref()),
            status.is_some_and(|s| s.server_ready),
            instance.metadata.deletion_timestamp.is_some(),
            instance
                .spec
                .credentials_secret_ref
                .as_ref()
                .map(|r| r.name.as_str()),
            instance.spec.credentials_ref.as_ref().map(|r| r.name.as_str()),
            serde_json::to_string(&instance.spec.allowed_peers).ok(),
        )
            .hash(&mut hasher);
        let base = hasher.finish();
        let applied = status
            .filter(|s| s.pending_changes.is_empty() && super::conditions::is_ready(&s.conditions))
            .and_then(|s| s.observed_generation);
        (base, applied)
    }

    /// Which peers a change of `instance` since it was last seen concerns, if any.
    fn changed(&mut self, instance: &VpnInstance) -> Option<Concerns> {
        let (base, profiles) = Self::fingerprints(instance);
        match self.0.insert(ObjectRef::from_obj(instance), (base, profiles)) {
            Some((b, _)) if b != base => Some(Concerns::AllPeers),
            Some((_, p)) if p != profiles => Some(Concerns::Profiles),
            Some(_) => None,
            None => Some(Concerns::AllPeers),
        }
    }

    fn forget(&mut self, instance: &VpnInstance) {
        self.0.remove(&ObjectRef::from_obj(instance));
    }
}

/// What a broadcast receiver receives, as a stream; what it missed while lagging is skipped.
fn received<T: Clone + Send + 'static>(
    receiver: tokio::sync::broadcast::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(item) => return Some((item, receiver)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// The resources whose Altostrat object a list refresh found changed or gone, so that they
/// look now instead of at their next scheduled look. Lagging behind the announcements only
/// loses triggers, never correctness: every object still has its scheduled look.
fn observed_changes<K>(
    observations: &Observations,
    store: Store<K>,
    records: impl Fn(&K, &Changed) -> bool + Send + 'static,
) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    received(observations.subscribe()).flat_map(move |change| {
        let matching: Vec<ObjectRef<K>> = store
            .state()
            .iter()
            .filter(|obj| records(obj, &change))
            .map(|obj| ObjectRef::from_obj(obj.as_ref()))
            .collect();
        futures::stream::iter(matching)
    })
}

fn records_instance(instance: &VpnInstance, change: &Changed) -> bool {
    let recorded = instance.status.as_ref().and_then(|s| s.instance_id.as_deref());
    matches!(change, Changed::Instance(id) if recorded == Some(id.as_str()))
}

/// A peer whose Altostrat peer changed, or a converged one delivering a profile whose
/// instance changed (its routes or DNS may be in the profile).
fn records_peer(peer: &VpnPeer, change: &Changed) -> bool {
    let status = peer.status.as_ref();
    match change {
        Changed::Peer(id) => status.and_then(|s| s.peer_id.as_deref()) == Some(id.as_str()),
        Changed::Instance(id) => {
            delivers_a_profile(peer) && status.and_then(|s| s.instance_id.as_deref()) == Some(id.as_str())
        }
    }
}

/// A converged peer with `spec.profileSecret`: one whose profile an instance change may
/// outdate. A peer not converged yet delivers its profile when it gets there, and re-running
/// it for each change of a busy instance (provisioning, other peers created) would only delay
/// it.
fn delivers_a_profile(peer: &VpnPeer) -> bool {
    let status = peer.status.as_ref();
    peer.spec.profile_secret.is_some()
        && status.is_some_and(|s| {
            super::conditions::is_converged(&s.conditions, s.observed_generation, peer.metadata.generation)
        })
}

/// The instances a deleted one may have handed its hub over to (see `instance::find_successor`):
/// those of its namespace adopting the hub it recorded. They were refused while it held the
/// hub's record, and wait for a person at the slow pace of such errors otherwise.
fn successors(instances: &Store<VpnInstance>, gone: &VpnInstance) -> Vec<ObjectRef<VpnInstance>> {
    let Some(id) = gone.status.as_ref().and_then(|s| s.instance_id.as_deref()) else {
        return Vec::new();
    };
    instances
        .state()
        .into_iter()
        .filter(|i| i.namespace() == gone.namespace() && i.spec.instance_id.as_deref() == Some(id))
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

/// The peers to reconcile when an instance changed: those of this scope that name it, from
/// any namespace (and, for a change only profiles depend on, deliver one).
fn dependents(
    peers: &Store<VpnPeer>,
    (instance, concerns): &(ObjectRef<VpnInstance>, Concerns),
) -> Vec<ObjectRef<VpnPeer>> {
    peers
        .state()
        .into_iter()
        .filter(|p| {
            instance.namespace.as_deref() == Some(p.instance_namespace().as_str())
                && p.spec.instance_ref.name == instance.name
        })
        .filter(|p| *concerns == Concerns::AllPeers || delivers_a_profile(p))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The peers of this scope to reconcile when a namespace's labels change: those of that
/// namespace that name a hub of another namespace, whose grant may have come or gone (it is
/// judged on the labels read then, never on this watch's copy). A namespace's first sighting
/// triggers nothing: its peers are reconciled when their own watch starts.
fn namespace_label_changes(
    client: Client,
    peers: Store<VpnPeer>,
) -> impl Stream<Item = ObjectRef<VpnPeer>> + Send + 'static {
    use std::hash::{Hash, Hasher};
    let mut seen = std::collections::HashMap::<String, u64>::new();
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client);
    watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .filter_map(move |namespace| {
            let changed = namespace.ok().and_then(|ns| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                ns.metadata.labels.hash(&mut hasher);
                let name = ns.metadata.name.unwrap_or_default();
                let before = seen.insert(name.clone(), hasher.finish());
                before.is_some_and(|b| b != hasher.finish()).then_some(name)
            });
            std::future::ready(changed)
        })
        .flat_map(move |namespace| futures::stream::iter(granted_in(&peers, &namespace)))
}

/// The peers of `namespace` that name a hub of another namespace.
fn granted_in(peers: &Store<VpnPeer>, namespace: &str) -> Vec<ObjectRef<VpnPeer>> {
    peers
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace) && peer::crosses_namespaces(p))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The peers of this scope that depend on a change of one of its instances; each change is
/// also passed on to the other scopes.
fn local_dependents(
    scopes: &Scopes,
    changes: impl Stream<Item = (ObjectRef<VpnInstance>, Concerns)> + Send + 'static,
    peers: Store<VpnPeer>,
) -> impl Stream<Item = ObjectRef<VpnPeer>> + Send + 'static {
    let shared = scopes.instance_changes.clone();
    changes.flat_map(move |change| {
        let _ = shared.send(change.clone());
        futures::stream::iter(dependents(&peers, &change))
    })
}

/// The peers of this scope that depend on a change of an instance another scope watches (a hub
/// of another watched namespace). Lagging behind loses only triggers: every peer still has its
/// scheduled look.
fn other_scopes_dependents(
    scopes: &Scopes,
    scope: &WatchScope,
    peers: Store<VpnPeer>,
) -> impl Stream<Item = ObjectRef<VpnPeer>> + Send + 'static {
    let own = match scope {
        WatchScope::AllNamespaces => None,
        WatchScope::Namespace(ns) => Some(ns.clone()),
    };
    received(scopes.instance_changes.subscribe())
        .filter(move |(instance, _)| {
            let elsewhere = own.is_some() && instance.namespace != own;
            std::future::ready(elsewhere)
        })
        .flat_map(move |change| futures::stream::iter(dependents(&peers, &change)))
}

/// Notes every object a controller's own watch hands it as queued (see
/// `vpn_operator_reconciles_queued`).
fn queued_events<K: Resource, E>(
    metrics: Arc<Metrics>,
    controller: &'static str,
    events: impl Stream<Item = Result<K, E>>,
) -> impl Stream<Item = Result<K, E>> {
    events.inspect_ok(move |obj| {
        let meta = obj.meta();
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        metrics.reconcile_triggered(controller, (namespace, meta.name.as_deref().unwrap_or_default()));
    })
}

/// Notes every other trigger of a controller (a dependency, a drift check) as queued.
fn queued_refs<K: Resource<DynamicType = ()>>(
    metrics: Arc<Metrics>,
    controller: &'static str,
    refs: impl Stream<Item = ObjectRef<K>>,
) -> impl Stream<Item = ObjectRef<K>> {
    refs.inspect(move |r| {
        let namespace = r.namespace.as_deref().unwrap_or_default();
        metrics.reconcile_triggered(controller, (namespace, &r.name));
    })
}

/// A controller of `K` started by its own watch's `events` and by other triggers, `refs`, each
/// noted as queued until its reconcile starts; stopping on `shutdown`.
fn controller<K: Managed>(
    (metrics, store): (&Arc<Metrics>, Store<K>),
    (events, refs): (
        impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
        impl Stream<Item = ObjectRef<K>> + Send + 'static,
    ),
    (concurrency, shutdown): (u16, impl std::future::Future<Output = ()> + Send + Sync + 'static),
) -> Controller<K> {
    let events = queued_events(metrics.clone(), K::CONTROLLER, events);
    Controller::for_stream(events, store)
        .reconcile_on(queued_refs(metrics.clone(), K::CONTROLLER, refs))
        .with_config(Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
}

/// The context of one scope's reconciles, its peer cache shared with every other scope.
fn scope_context<A: VpnApi>(
    deps: ControllerDeps<A>,
    instances: Store<VpnInstance>,
    peers: Store<VpnPeer>,
) -> Arc<Context<A>> {
    deps.scopes
        .peers
        .lock()
        .expect("peer scopes lock")
        .push(peers.clone());
    let mut ctx = Context::new(
        deps.client,
        deps.api,
        deps.observations,
        (deps.default_token, deps.shared),
        deps.reporter,
        (deps.metrics, deps.running),
        deps.settings,
        instances,
        peers,
    );
    ctx.peer_scopes = deps.scopes.peers.clone();
    Arc::new(ctx)
}

/// Runs both controllers for one scope until `shutdown` resolves. In-flight reconciles are
/// allowed to finish (graceful shutdown). `on_started` receives the caches once they exist.
pub async fn run<A: VpnApi>(
    deps: ControllerDeps<A>,
    scope: WatchScope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
    on_started: impl FnOnce(Store<VpnInstance>, Store<VpnPeer>) + Send,
) {
    let config = watch_config(&deps.settings);
    let (left_scope, left_scope_reports) = futures::channel::mpsc::unbounded();
    let (instance_changed, instance_changes) = futures::channel::mpsc::unbounded();
    let (instance_gone, instances_gone) = futures::channel::mpsc::unbounded();
    let (instance_store, instance_writer) = reflector::store();
    let instance_events = instance_stream(
        scope.api(&deps.client),
        config.clone(),
        instance_writer,
        (instance_changed, instance_gone),
        left_scope.clone(),
    );
    let instances = instance_store.clone();
    let handed_over =
        instances_gone.flat_map(move |gone| futures::stream::iter(successors(&instances, &gone)));
    let (peer_store, peer_writer) = reflector::store();
    let peer_events = peer_stream(scope.api(&deps.client), config, peer_writer, left_scope);
    let peer_triggers = futures::stream::select(
        local_dependents(&deps.scopes, instance_changes, peer_store.clone()),
        other_scopes_dependents(&deps.scopes, &scope, peer_store.clone()),
    );
    let peer_drift = observed_changes(&deps.observations, peer_store.clone(), records_peer);
    let grants = namespace_label_changes(deps.client.clone(), peer_store.clone());
    let instance_drift = observed_changes(&deps.observations, instance_store.clone(), records_instance);

    let instance_triggers = futures::stream::select(instance_drift, handed_over);
    let instance_controller = controller(
        (&deps.metrics, instance_store.clone()),
        (instance_events, instance_triggers),
        (deps.settings.instance_concurrency, shutdown.clone()),
    );
    let peer_controller = controller(
        (&deps.metrics, peer_store.clone()),
        (
            peer_events,
            futures::stream::select(futures::stream::select(peer_triggers, peer_drift), grants),
        ),
        (deps.settings.peer_concurrency, shutdown),
    );
    let ctx = scope_context(deps, instance_store.clone(), peer_store.clone());
    on_started(instance_store, peer_store);

    let instance_loop = instance_controller
        .run(reconcile::<VpnInstance, A>, error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));
    let peer_loop = peer_controller
        .run(reconcile::<VpnPeer, A>, error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()));
    futures::join!(instance_loop, peer_loop, warn_left_scope(left_scope_reports, ctx));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn peer(namespace: &str, name: &str, instance: &str) -> VpnPeer {
        let spec = serde_json::from_value(serde_json::json!({
            "instanceRef": {"name": instance}, "type": "client", "protocol": "wireguard",
            "userId": "a1b2c3d4-e5f6-7890-1234-567890abcdef"
        }))
        .unwrap();
        let mut p = VpnPeer::new(name, spec);
        p.metadata.namespace = Some(namespace.into());
        p
    }

    #[test]
    fn an_instance_change_triggers_only_the_peers_that_name_it_in_its_namespace() {
        let (store, mut writer) = reflector::store::<VpnPeer>();
        let profile = |name: &str| Some(crate::crd::ProfileSecretSpec { name: name.into() });
        let mut delivering = peer("a", "dave", "hub");
        delivering.spec.profile_secret = profile("dave-vpn");
        delivering.metadata.generation = Some(3);
        delivering.status = Some(crate::crd::VpnPeerStatus {
            observed_generation: Some(3),
            conditions: vec![condition("Ready"), condition("Synced")],
            ..Default::default()
        });
        let mut creating = peer("a", "erin", "hub");
        creating.spec.profile_secret = profile("erin-vpn");
        for p in [
            peer("a", "alice", "hub"),
            peer("a", "bob", "other-hub"),
            peer("b", "carol", "hub"),
            delivering,
            creating,
        ] {
            writer.apply_watcher_event(&Event::Apply(p));
        }
        let hub_in_a = ObjectRef::<VpnInstance>::new("hub").within("a");
        let triggered = |concerns| -> Vec<String> {
            let change = (hub_in_a.clone(), concerns);
            dependents(&store, &change).into_iter().map(|r| r.name).collect()
        };
        let mut all = triggered(Concerns::AllPeers);
        all.sort();
        assert_eq!(all, ["alice", "dave", "erin"].map(String::from));
        assert_eq!(
            triggered(Concerns::Profiles),
            vec!["dave".to_owned()],
            "a peer still being created delivers its profile when it gets there"
        );
    }

    #[tokio::test]
    async fn a_change_of_a_hub_another_scope_watches_triggers_the_peers_naming_it() {
        let scopes = Scopes::default();
        let (store, mut writer) = reflector::store::<VpnPeer>();
        let mut alice = peer("apps", "alice", "hub");
        alice.spec.instance_ref.namespace = Some("network".into());
        writer.apply_watcher_event(&Event::Apply(alice));
        writer.apply_watcher_event(&Event::Apply(peer("apps", "bob", "hub")));
        let apps = WatchScope::Namespace("apps".into());
        let mut triggered = Box::pin(other_scopes_dependents(&scopes, &apps, store));
        let changed = |namespace: &str| (ObjectRef::new("hub").within(namespace), Concerns::AllPeers);
        scopes.instance_changes.send(changed("apps")).unwrap();
        scopes.instance_changes.send(changed("network")).unwrap();
        let first = triggered.next().await.unwrap();
        assert_eq!(
            first.name, "alice",
            "a change in its own scope is that scope's trigger; the other scope's reaches alice"
        );
    }

    #[test]
    fn peers_are_retriggered_only_by_instance_changes_they_depend_on() {
        let spec = serde_json::from_value(serde_json::json!({
            "name": "Hub", "hostname": "hub", "region": "sjc"
        }))
        .unwrap();
        let mut hub = VpnInstance::new("hub", spec);
        hub.metadata.namespace = Some("a".into());
        let mut seen = PeerRelevant::default();
        let all = Some(Concerns::AllPeers);
        assert_eq!(seen.changed(&hub), all, "first sighting");
        assert_eq!(seen.changed(&hub), None, "nothing new");
        let mut status = crate::crd::VpnInstanceStatus {
            instance_id: Some("i-1".into()),
            ..Default::default()
        };
        hub.status = Some(status.clone());
        assert_eq!(seen.changed(&hub), all, "the Altostrat id is known now");
        status.server_ready = true;
        hub.status = Some(status.clone());
        assert_eq!(
            seen.changed(&hub),
            all,
            "its server is ready: peers may be created now"
        );
        status.observed_generation = Some(3);
        status.pending_changes = vec!["dns".into()];
        hub.status = Some(status.clone());
        assert_eq!(
            seen.changed(&hub),
            None,
            "its own status details do not concern its peers"
        );
        status.pending_changes.clear();
        status.conditions = vec![condition("Ready")];
        hub.status = Some(status);
        assert_eq!(
            seen.changed(&hub),
            Some(Concerns::Profiles),
            "generation 3 is applied: a profile may have changed with it"
        );
        hub.spec.name = "Renamed".into();
        assert_eq!(seen.changed(&hub), None, "nor does a configuration edit");
        hub.metadata.deletion_timestamp = Some(super::super::conditions::now());
        assert_eq!(seen.changed(&hub), all, "being deleted does");
    }

    fn condition(type_: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: "Available".into(),
            message: String::new(),
            observed_generation: Some(3),
            last_transition_time: super::super::conditions::now(),
        }
    }

    #[test]
    fn an_object_that_leaves_the_selector_with_the_finalizer_is_reported() {
        let (tx, mut rx) = futures::channel::mpsc::unbounded();
        let mut held = peer("a", "alice", "hub");
        held.metadata.finalizers = Some(vec![FINALIZER.into()]);
        report_left_scope(&Event::Delete(held.clone()), &tx);
        let mut deleted = held.clone();
        deleted.metadata.deletion_timestamp = Some(super::super::conditions::now());
        report_left_scope(&Event::Delete(deleted), &tx);
        report_left_scope(&Event::Delete(peer("a", "bob", "hub")), &tx);
        report_left_scope(&Event::Apply(held), &tx);
        drop(tx);
        let reported: Vec<_> = futures::executor::block_on_stream(&mut rx).collect();
        assert_eq!(
            reported.len(),
            1,
            "only the one that left scope holding the finalizer"
        );
        assert_eq!(reported[0].name.as_deref(), Some("alice"));
    }

    #[test]
    fn only_spec_and_deletion_changes_need_a_reconcile() {
        let mut p = peer("a", "alice", "hub");
        p.metadata.generation = Some(1);
        let before = needs_reconcile(&p);
        p.status = Some(Default::default());
        p.metadata.finalizers = Some(vec!["vpn.altostrat.io/cleanup".into()]);
        assert_eq!(
            needs_reconcile(&p),
            before,
            "status and finalizer changes are not triggers"
        );
        p.metadata.generation = Some(2);
        assert_ne!(needs_reconcile(&p), before);
    }

    #[test]
    fn pausing_and_resuming_need_a_reconcile() {
        let mut p = peer("a", "alice", "hub");
        let running = needs_reconcile(&p);
        p.metadata.annotations = Some([(PAUSED_ANNOTATION.to_owned(), "true".to_owned())].into());
        let paused = needs_reconcile(&p);
        assert_ne!(paused, running);
        p.metadata.annotations = Some([(PAUSED_ANNOTATION.to_owned(), "false".to_owned())].into());
        assert_ne!(needs_reconcile(&p), paused);
    }

    #[test]
    fn each_new_reconcile_request_needs_a_reconcile() {
        let mut p = peer("a", "alice", "hub");
        let request = |at: &str| Some([(RECONCILE_REQUEST_ANNOTATION.to_owned(), at.to_owned())].into());
        p.metadata.annotations = request("2026-11-27T10:00:00Z");
        let first = needs_reconcile(&p);
        p.metadata.annotations = request("2026-11-27T10:05:00Z");
        assert_ne!(needs_reconcile(&p), first);
    }
}
