//! Prometheus metrics. Every label has a bounded set of values: controller names, result,
//! error categories, endpoint templates, status classes, condition statuses and the cluster's
//! namespaces — never object names or ids.

mod process;
mod queue;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::altostrat::{Caller, Endpoint, RequestObserver, Urgency};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UrgencyLabels {
    pub urgency: &'static str,
}

/// The namespace whose share of a token's budget a call was paid from (`""`: an observation
/// shared by every namespace of the token); `resource_namespace` for the reason given at
/// [`ResourceLabels`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceLabels {
    pub resource_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// One row of `vpn_operator_resources`. The namespace label is `resource_namespace`, not
/// `namespace`: a scrape's own `namespace` target label (the operator's namespace, which the
/// alerts select on) would otherwise rename it to `exported_namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResourceLabels {
    pub kind: &'static str,
    pub resource_namespace: String,
    pub ready: &'static str,
    pub synced: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequeueLabels {
    pub controller: &'static str,
    pub cause: &'static str,
}

/// The counts `vpn_operator_resources` shows, by its labels; recomputed on every scrape.
pub type ResourceCounts = BTreeMap<ResourceLabels, i64>;

/// All metrics of the operator, registered under the `vpn_operator` prefix.
#[derive(Debug)]
pub struct Metrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    pub reconciles_in_flight: Family<ControllerLabels, Gauge>,
    pub reconciles_queued: Family<ControllerLabels, Gauge>,
    pub reconcile_queue_wait: Family<ControllerLabels, Histogram>,
    pub requeues: Family<RequeueLabels, Counter>,
    pub api_requests: Family<RequestLabels, Counter>,
    pub api_request_duration: Family<EndpointLabels, Histogram>,
    pub api_retries: Family<EndpointLabels, Counter>,
    pub api_rate_limit_waits: Counter,
    pub api_rate_limit_wait_seconds: Counter<f64, AtomicU64>,
    pub api_throttled: Family<UrgencyLabels, Counter>,
    pub api_namespace_calls: Family<NamespaceLabels, Counter>,
    pub api_namespace_wait_seconds: Family<NamespaceLabels, Counter<f64, AtomicU64>>,
    pub drift_cycle_seconds: Gauge<f64, AtomicU64>,
    pub resources: Family<ResourceLabels, Gauge>,
    pub time_to_ready: Family<KindLabels, Histogram>,
    pub leader: Gauge,
    pub build_info: Family<BuildLabels, Gauge>,
    /// Triggers handed to a controller whose reconcile has not started (not exported itself).
    pending: queue::Pending,
    /// See [`Metrics::set_default_token_rejected`].
    pub default_token_rejected: Gauge,
}

/// 5 ms … 1310.72 s (~22 min): a reconcile can queue behind the per-token rate limiter for
/// minutes, and those waits must not all land in `+Inf`.
fn reconcile_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 19))
}

/// 5 ms … 40.96 s: one Altostrat request, bounded by the request timeout (30 s by default).
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// 5 s … 1 h, then `+Inf`: a peer is Ready in seconds, a hub's provisioning takes about ten
/// minutes, and an hour is long past any normal provisioning.
fn time_to_ready_histogram() -> Histogram {
    let seconds = [
        5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 450.0,
    ];
    let minutes = [10.0, 15.0, 20.0, 30.0, 45.0, 60.0].map(|m| m * 60.0);
    Histogram::new(seconds.into_iter().chain(minutes))
}

/// Counts one reconcile in flight until dropped (also when the reconcile is cancelled).
#[derive(Debug)]
#[must_use = "the reconcile is counted only while the guard lives"]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            reconciles_in_flight: Family::default(),
            reconciles_queued: Family::default(),
            reconcile_queue_wait: Family::new_with_constructor(reconcile_histogram),
            requeues: Family::default(),
            api_requests: Family::default(),
            api_request_duration: Family::new_with_constructor(request_histogram),
            api_retries: Family::default(),
            api_rate_limit_waits: Counter::default(),
            api_rate_limit_wait_seconds: Counter::default(),
            api_throttled: Family::default(),
            api_namespace_calls: Family::default(),
            api_namespace_wait_seconds: Family::default(),
            drift_cycle_seconds: Gauge::default(),
            resources: Family::default(),
            time_to_ready: Family::new_with_constructor(time_to_ready_histogram),
            leader: Gauge::default(),
            build_info: Family::default(),
            pending: queue::Pending::default(),
            default_token_rejected: Gauge::default(),
        };
        metrics
            .build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let r = registry.sub_registry_with_prefix("vpn_operator");
        metrics.register_reconcile_metrics(r);
        metrics.register_altostrat_metrics(r);
        metrics.register_state_metrics(r);
        metrics.register_default_token_metrics(r);
        registry.register_collector(Box::new(process::ProcessCollector::default()));
        metrics
    }

    // `metrics.<field>` in each `register` call is what hack/tools/promql-check reads to know
    // the exported names; keep that shape.
    fn register_reconcile_metrics(&self, r: &mut Registry) {
        let metrics = self;
        r.register(
            "reconciles",
            "Reconciles by controller and result",
            metrics.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles by controller and error category",
            metrics.reconcile_errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            metrics.reconcile_duration.clone(),
        );
        r.register(
            "reconciles_in_flight",
            "Reconciles running now, by controller",
            metrics.reconciles_in_flight.clone(),
        );
        metrics.register_queue_metrics(r);
    }

    fn register_queue_metrics(&self, r: &mut Registry) {
        let metrics = self;
        r.register(
            "reconciles_queued",
            "Objects a watch, a dependency or a drift check has triggered and whose reconcile has not started yet, by controller (timer requeues not included)",
            metrics.reconciles_queued.clone(),
        );
        r.register(
            "reconcile_queue_wait_seconds",
            "Time from an object's first pending trigger (watch event, dependency, drift check) to the start of its reconcile, by controller: waiting for a worker or for the object's running reconcile",
            metrics.reconcile_queue_wait.clone(),
        );
        r.register(
            "requeues",
            "Reconciles that scheduled the next one after a delay, by controller and cause: next_look (a successful reconcile's next poll or drift check) or the error category of a failed one",
            metrics.requeues.clone(),
        );
    }

    fn register_altostrat_metrics(&self, r: &mut Registry) {
        let metrics = self;
        r.register(
            "altostrat_requests",
            "Altostrat API requests by endpoint and HTTP status class (1xx-5xx, or error when no answer)",
            metrics.api_requests.clone(),
        );
        r.register(
            "altostrat_request_duration_seconds",
            "Duration of one Altostrat API request attempt by endpoint, rate-limiter waits excluded",
            metrics.api_request_duration.clone(),
        );
        r.register(
            "altostrat_retries",
            "Altostrat API retries by endpoint",
            metrics.api_retries.clone(),
        );
        r.register(
            "altostrat_rate_limit_waits",
            "Requests delayed by the client-side rate limiter",
            metrics.api_rate_limit_waits.clone(),
        );
        r.register(
            "altostrat_rate_limit_wait_seconds",
            "Time spent waiting for the client-side rate limiter",
            metrics.api_rate_limit_wait_seconds.clone(),
        );
        r.register(
            "altostrat_throttled",
            "Requests the per-token API budget held back and requeued (not sent), by urgency: write, poll or drift",
            metrics.api_throttled.clone(),
        );
        r.register(
            "altostrat_namespace_calls",
            "Altostrat requests the per-token budget let through, by the namespace whose share paid for them (resource_namespace; \"\" for observations shared by every namespace of a token)",
            metrics.api_namespace_calls.clone(),
        );
        r.register(
            "altostrat_namespace_wait_seconds",
            "Time requests waited in their token's budget lane before they were sent, by the namespace whose share paid for them (resource_namespace; \"\" for shared observations)",
            metrics.api_namespace_wait_seconds.clone(),
        );
    }

    fn register_state_metrics(&self, r: &mut Registry) {
        let metrics = self;
        r.register(
            "drift_cycle_seconds",
            "How long until every object has been compared with Altostrat, derived from the API budget and the number of lists (the longest over all tokens)",
            metrics.drift_cycle_seconds.clone(),
        );
        r.register(
            "resources",
            "Resources by kind, namespace (resource_namespace; as many values as the cluster has namespaces with resources), and Ready and Synced condition status (True, False or Unknown when the condition is missing); a combination without resources has no series",
            metrics.resources.clone(),
        );
        r.register(
            "time_to_ready_seconds",
            "Seconds from a resource's creation to its first Ready=True, by kind: observed when this operator turns Ready True on a resource whose spec was never edited (generation 1); a resource edited before its first Ready is not counted, one that falls out of Ready unedited and recovers is counted again",
            metrics.time_to_ready.clone(),
        );
        r.register(
            "leader",
            "1 when this replica holds the leader lease (or leader election is off)",
            metrics.leader.clone(),
        );
        r.register(
            "build_info",
            "Always 1, labelled with the operator's version",
            metrics.build_info.clone(),
        );
    }

    /// Notes a trigger of object `namespace/name` handed to `controller`.
    pub fn reconcile_triggered(&self, controller: &'static str, (namespace, name): (&str, &str)) {
        if self
            .pending
            .push(controller, namespace, name, tokio::time::Instant::now())
        {
            self.reconciles_queued
                .get_or_create(&ControllerLabels { controller })
                .inc();
        }
    }

    /// Forgets triggers whose object went away before its reconcile started.
    pub fn drop_abandoned_triggers(&self) {
        for controller in self.pending.drop_abandoned(tokio::time::Instant::now()) {
            self.reconciles_queued
                .get_or_create(&ControllerLabels { controller })
                .dec();
        }
    }

    /// Counts a reconcile of `controller` as in flight until the returned guard is dropped, and
    /// takes the object's pending trigger, if any, as waited for.
    pub fn reconcile_started(&self, controller: &'static str, (namespace, name): (&str, &str)) -> InFlight {
        let labels = ControllerLabels { controller };
        let now = tokio::time::Instant::now();
        if let Some(waited) = self.pending.take(controller, namespace, name, now) {
            self.reconciles_queued.get_or_create(&labels).dec();
            self.reconcile_queue_wait
                .get_or_create(&labels)
                .observe(waited.as_secs_f64());
        }
        let gauge = self
            .reconciles_in_flight
            .get_or_create(&ControllerLabels { controller })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }

    pub fn record_request_duration(&self, endpoint: Endpoint, elapsed: Duration) {
        self.api_request_duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_request(&self, endpoint: Endpoint, status: Option<u16>) {
        let status_class = match status {
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "error",
        };
        self.api_requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                status_class,
            })
            .inc();
    }

    pub fn record_retry(&self, endpoint: Endpoint) {
        self.api_retries
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .inc();
    }

    pub fn record_drift_cycle(&self, longest: Duration) {
        self.drift_cycle_seconds.set(longest.as_secs_f64());
    }

    pub fn record_throttled(&self, urgency: Urgency) {
        self.api_throttled
            .get_or_create(&UrgencyLabels {
                urgency: urgency.as_str(),
            })
            .inc();
    }

    /// A request of `namespace`'s share was let through after `waited`.
    pub fn record_rate_limit_wait(&self, namespace: &str, waited: Duration) {
        let labels = NamespaceLabels {
            resource_namespace: namespace.to_owned(),
        };
        self.api_namespace_calls.get_or_create(&labels).inc();
        if !waited.is_zero() {
            self.api_namespace_wait_seconds
                .get_or_create(&labels)
                .inc_by(waited.as_secs_f64());
            self.api_rate_limit_waits.inc();
            self.api_rate_limit_wait_seconds.inc_by(waited.as_secs_f64());
        }
    }

    pub fn record_reconcile(&self, controller: &'static str, elapsed: Duration, error: Option<&'static str>) {
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(elapsed.as_secs_f64());
        let result = if error.is_some() { "error" } else { "success" };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        if let Some(category) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels { controller, category })
                .inc();
        }
    }

    /// Counts a requeue after a delay, by `cause` (`next_look` or an error category).
    pub fn record_requeue(&self, controller: &'static str, cause: &'static str) {
        self.requeues
            .get_or_create(&RequeueLabels { controller, cause })
            .inc();
    }

    /// Records a resource of `kind` turning Ready for the first time, `age` after its creation.
    pub fn record_first_ready(&self, kind: &str, age: Duration) {
        self.time_to_ready
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .observe(age.as_secs_f64());
    }

    /// Replaces every row of `vpn_operator_resources`: a namespace without resources left
    /// loses its series instead of keeping its last count.
    pub fn set_resources(&self, counts: &ResourceCounts) {
        self.resources.clear();
        for (labels, count) in counts {
            self.resources.get_or_create(labels).set(*count);
        }
    }
}

impl RequestObserver for Metrics {
    fn request_finished(&self, endpoint: Endpoint, status: Option<u16>, elapsed: Duration) {
        self.record_request(endpoint, status);
        self.record_request_duration(endpoint, elapsed);
    }

    fn retrying(&self, endpoint: Endpoint) {
        self.record_retry(endpoint);
    }

    fn rate_limit_waited(&self, caller: &Caller, waited: Duration) {
        self.record_rate_limit_wait(caller.as_str(), waited);
    }

    fn throttled(&self, urgency: Urgency) {
        self.record_throttled(urgency);
    }
}

// The operator's default token, as Altostrat's answers judge it (controller/default_token.rs).
impl Metrics {
    fn register_default_token_metrics(&self, r: &mut Registry) {
        let metrics = self;
        r.register(
            "default_token_rejected",
            "1 while the Altostrat API has refused the operator's default token (401/403) for longer than the grace for a rotation (readiness fails meanwhile); 0 otherwise, also without a default token",
            metrics.default_token_rejected.clone(),
        );
    }

    pub fn set_default_token_rejected(&self, rejected: bool) {
        self.default_token_rejected.set(i64::from(rejected));
    }
}

/// Renders the registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_and_bounded_labels_are_exported() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.record_request(Endpoint::UpdateInstance, Some(503));
        metrics.record_request(Endpoint::GetInstance, None);
        metrics.record_reconcile("vpninstance", Duration::from_millis(20), Some("transient"));
        metrics.record_rate_limit_wait("team-a", Duration::from_millis(1500));
        let text = encode(&registry).unwrap();
        assert!(text.contains(
            r#"vpn_operator_altostrat_requests_total{endpoint="PUT /vpn/instances/{instanceId}",status_class="5xx"} 1"#
        ));
        assert!(text.contains(r#"status_class="error""#));
        assert!(text.contains(
            r#"vpn_operator_reconcile_errors_total{controller="vpninstance",category="transient"} 1"#
        ));
        assert!(text.contains("vpn_operator_altostrat_rate_limit_wait_seconds_total 1.5"));
        assert!(
            text.contains(r#"vpn_operator_altostrat_namespace_calls_total{resource_namespace="team-a"} 1"#)
        );
        assert!(text.contains(
            r#"vpn_operator_altostrat_namespace_wait_seconds_total{resource_namespace="team-a"} 1.5"#
        ));
        assert!(text.contains("vpn_operator_reconcile_duration_seconds_bucket"));
    }

    #[test]
    fn build_info_in_flight_and_request_latency_are_exported() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let version = env!("CARGO_PKG_VERSION");
        let text = encode(&registry).unwrap();
        assert!(
            text.contains(&format!(r#"vpn_operator_build_info{{version="{version}"}} 1"#)),
            "{text}"
        );
        assert!(text.contains("# TYPE vpn_operator_build_info gauge"));

        let first = metrics.reconcile_started("vpninstance", ("ns", "a"));
        let second = metrics.reconcile_started("vpninstance", ("ns", "b"));
        let peer = metrics.reconcile_started("vpnpeer", ("ns", "a"));
        let text = encode(&registry).unwrap();
        assert!(text.contains(r#"vpn_operator_reconciles_in_flight{controller="vpninstance"} 2"#));
        assert!(text.contains(r#"vpn_operator_reconciles_in_flight{controller="vpnpeer"} 1"#));
        drop((first, second, peer));
        let text = encode(&registry).unwrap();
        assert!(text.contains(r#"vpn_operator_reconciles_in_flight{controller="vpninstance"} 0"#));
        assert!(text.contains(r#"vpn_operator_reconciles_in_flight{controller="vpnpeer"} 0"#));

        metrics.request_finished(Endpoint::GetInstance, Some(200), Duration::from_millis(30));
        metrics.request_finished(Endpoint::GetInstance, None, Duration::from_secs(2));
        let text = encode(&registry).unwrap();
        let endpoint = r#"endpoint="GET /vpn/instances/{instanceId}""#;
        assert!(text.contains("# TYPE vpn_operator_altostrat_request_duration_seconds histogram"));
        assert!(text.contains(&format!(
            "vpn_operator_altostrat_request_duration_seconds_count{{{endpoint}}} 2"
        )));
        assert!(text.contains(&format!(
            r#"vpn_operator_altostrat_request_duration_seconds_bucket{{le="0.04",{endpoint}}} 1"#
        )));
        assert!(text.contains(&format!(
            r#"vpn_operator_altostrat_request_duration_seconds_bucket{{le="40.96",{endpoint}}} 2"#
        )));
        // Both attempts still count as requests, by status class.
        assert!(text.contains(&format!(
            r#"vpn_operator_altostrat_requests_total{{{endpoint},status_class="2xx"}} 1"#
        )));
    }

    #[test]
    fn reconcile_duration_buckets_reach_minutes() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        // A reconcile that queued ten minutes behind the rate limiter lands in a finite bucket.
        metrics.record_reconcile("vpnpeer", Duration::from_secs(600), None);
        let text = encode(&registry).unwrap();
        let bucket = |le: &str| {
            format!(r#"vpn_operator_reconcile_duration_seconds_bucket{{le="{le}",controller="vpnpeer"}}"#)
        };
        assert!(text.contains(&format!("{} 0", bucket("0.005"))), "{text}");
        assert!(text.contains(&format!("{} 0", bucket("327.68"))), "{text}");
        assert!(text.contains(&format!("{} 1", bucket("655.36"))), "{text}");
        assert!(text.contains(&format!("{} 1", bucket("1310.72"))), "{text}");
    }

    #[test]
    fn resources_by_namespace_ready_and_synced_replace_the_previous_scrape() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let row = |namespace: &str, ready, synced| ResourceLabels {
            kind: "VpnPeer",
            resource_namespace: namespace.to_owned(),
            ready,
            synced,
        };
        let first = ResourceCounts::from([
            (row("team-a", "True", "False"), 2),
            (row("team-b", "False", "Unknown"), 1),
        ]);
        metrics.set_resources(&first);
        let text = encode(&registry).unwrap();
        assert!(text.contains(
            r#"vpn_operator_resources{kind="VpnPeer",resource_namespace="team-a",ready="True",synced="False"} 2"#
        ), "{text}");
        assert!(text.contains(r#"resource_namespace="team-b",ready="False",synced="Unknown"} 1"#));
        // team-b's last resource is gone: its series goes with it.
        metrics.set_resources(&ResourceCounts::from([(row("team-a", "True", "True"), 2)]));
        let text = encode(&registry).unwrap();
        assert!(!text.contains("team-b"), "{text}");
        assert!(!text.contains(r#"synced="False""#), "{text}");
        assert!(text.contains(r#"resource_namespace="team-a",ready="True",synced="True"} 2"#));
    }

    #[test]
    fn time_to_ready_buckets_run_from_seconds_to_an_hour() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.record_first_ready("VpnInstance", Duration::from_secs(11 * 60));
        metrics.record_first_ready("VpnPeer", Duration::from_secs(3));
        let text = encode(&registry).unwrap();
        let bucket = |kind: &str, le: &str| {
            format!(r#"vpn_operator_time_to_ready_seconds_bucket{{le="{le}",kind="{kind}"}}"#)
        };
        assert!(
            text.contains(&format!("{} 1", bucket("VpnPeer", "5.0"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 0", bucket("VpnInstance", "600.0"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", bucket("VpnInstance", "900.0"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1", bucket("VpnInstance", "3600.0"))),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_is_queued_until_its_reconcile_starts_and_requeues_count_by_cause() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.reconcile_triggered("vpnpeer", ("ns", "a"));
        metrics.reconcile_triggered("vpnpeer", ("ns", "a"));
        metrics.reconcile_triggered("vpnpeer", ("ns", "b"));
        let text = encode(&registry).unwrap();
        assert!(
            text.contains(r#"vpn_operator_reconciles_queued{controller="vpnpeer"} 2"#),
            "{text}"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        let running = metrics.reconcile_started("vpnpeer", ("ns", "a"));
        metrics.record_requeue("vpnpeer", "next_look");
        metrics.record_requeue("vpnpeer", "throttled");
        drop(running);
        let text = encode(&registry).unwrap();
        assert!(
            text.contains(r#"vpn_operator_reconciles_queued{controller="vpnpeer"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"vpn_operator_reconcile_queue_wait_seconds_sum{controller="vpnpeer"} 3.0"#));
        assert!(text.contains(r#"vpn_operator_requeues_total{controller="vpnpeer",cause="throttled"} 1"#));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_read_at_scrape_time() {
        let registry = {
            let mut registry = Registry::default();
            Metrics::register(&mut registry);
            registry
        };
        let text = encode(&registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(&format!("\n{name}")), "{name} in {text}");
        }
    }
}
