#!/usr/bin/env python3
"""Writes deploy/helm/altostrat-vpn-operator/files/grafana-dashboard.json (the chart ships it as
an optional ConfigMap). Edit this script, not the JSON: `python3 hack/grafana-dashboard.py`
(an optional argument writes elsewhere; a deploy check compares the committed JSON with it).
Every expression is parsed as PromQL and its metric names are checked against src/metrics.rs by
scripts/deploy-checks.sh."""
import json
import pathlib
import sys

SEL = 'namespace=~"$namespace", job=~"$job"'
OUT = pathlib.Path(__file__).resolve().parent.parent / "deploy/helm/altostrat-vpn-operator/files/grafana-dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}

panels = []


def panel(title, kind, targets, x, y, w, h, unit="short", description="", stack=False):
    p = {
        "id": len(panels) + 1,
        "title": title,
        "description": description,
        "type": kind,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": e, "legendFormat": legend}
            for i, (e, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
    }
    if kind == "timeseries" and stack:
        p["fieldConfig"]["defaults"]["custom"] = {"stacking": {"mode": "normal"}}
    panels.append(p)


panel("Leader", "stat", [(f"sum(vpn_operator_leader{{{SEL}}})", "leaders")], 0, 0, 4, 4,
      description="Replicas holding the leader Lease (1 when leader election is off). 0 means nothing reconciles.")
panel("Not Ready", "stat",
      [(f'sum by (kind) (max by (kind, ready) (vpn_operator_resources{{{SEL}, ready!="True"}}))', "{{kind}}")],
      4, 0, 8, 4, description="VpnInstances and VpnPeers whose Ready condition is False or Unknown.")
panel("Reconcile error ratio", "stat",
      [(f"sum(rate(vpn_operator_reconcile_errors_total{{{SEL}}}[$__rate_interval])) / "
        f"sum(rate(vpn_operator_reconciles_total{{{SEL}}}[$__rate_interval]))", "errors")],
      12, 0, 6, 4, unit="percentunit")
panel("Rate-limiter wait", "stat",
      [(f"sum(rate(vpn_operator_altostrat_rate_limit_wait_seconds_total{{{SEL}}}[$__rate_interval]))", "queued")],
      18, 0, 6, 4, unit="s",
      description="Seconds spent waiting for the per-token rate limiter per second: above 1, requests queue continuously.")
panel("Resources by Ready and Synced", "timeseries",
      [(f"sum by (kind, ready, synced) (max by (kind, resource_namespace, ready, synced) (vpn_operator_resources{{{SEL}}}))",
        "{{kind}} Ready={{ready}} Synced={{synced}}")], 0, 4, 12, 8,
      description="Ready: the Altostrat object serves the spec. Synced: the last reconcile did all it can do now. "
                  "Ready but not Synced for long: changes are not being applied (alert AltostratVpnResourcesNotSynced).")
panel("Reconciles", "timeseries",
      [(f"sum by (controller, result) (rate(vpn_operator_reconciles_total{{{SEL}}}[$__rate_interval]))",
        "{{controller}} {{result}}")], 12, 4, 12, 8, unit="ops", stack=True)
panel("Reconcile errors by category", "timeseries",
      [(f"sum by (controller, category) (rate(vpn_operator_reconcile_errors_total{{{SEL}}}[$__rate_interval]))",
        "{{controller}} {{category}}")], 0, 12, 12, 8, unit="ops", stack=True,
      description="rate_limited: Altostrat answered 429; credentials/unauthorized/forbidden: the token; invalid_spec: fix the resource.")
panel("Reconcile duration", "timeseries",
      [(f"histogram_quantile({q}, sum by (le, controller) (rate(vpn_operator_reconcile_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
        f"{{{{controller}}}} p{int(q * 100)}") for q in (0.5, 0.95, 0.99)], 12, 12, 12, 8, unit="s",
      description="Includes waits for the rate limiter. The highest bucket is about 41 s: longer reconciles show as the top bucket.")
panel("Altostrat requests by status class", "timeseries",
      [(f"sum by (status_class) (rate(vpn_operator_altostrat_requests_total{{{SEL}}}[$__rate_interval]))",
        "{{status_class}}")], 0, 20, 12, 8, unit="reqps", stack=True)
panel("Altostrat requests by endpoint", "timeseries",
      [(f"sum by (endpoint) (rate(vpn_operator_altostrat_requests_total{{{SEL}}}[$__rate_interval]))",
        "{{endpoint}}")], 12, 20, 12, 8, unit="reqps", stack=True)
panel("Altostrat retries", "timeseries",
      [(f"sum by (endpoint) (rate(vpn_operator_altostrat_retries_total{{{SEL}}}[$__rate_interval]))",
        "{{endpoint}}")], 0, 28, 12, 8, unit="ops")
panel("Rate limiter", "timeseries",
      [(f"sum(rate(vpn_operator_altostrat_rate_limit_waits_total{{{SEL}}}[$__rate_interval]))", "delayed requests/s"),
       (f"sum(rate(vpn_operator_altostrat_rate_limit_wait_seconds_total{{{SEL}}}[$__rate_interval]))", "wait seconds/s")],
      12, 28, 12, 8)
panel("API budget: requests held back", "timeseries",
      [(f"sum by (urgency) (rate(vpn_operator_altostrat_throttled_total{{{SEL}}}[$__rate_interval]))", "{{urgency}}")],
      0, 36, 12, 8, unit="ops",
      description="Requests the per-token budget did not send and requeued. Held-back writes show as Synced=False "
                  "reason=Throttled on their resources; drift checks of converged resources are put off silently.")
panel("Drift cycle", "timeseries",
      [(f"max(vpn_operator_drift_cycle_seconds{{{SEL}}})", "drift cycle")],
      12, 36, 12, 8, unit="s",
      description="How long until every object has been compared with Altostrat: (1 + instances) lists / "
                  "(rate x observe share), at least the resync interval; the longest over all tokens.")

panel("Resources by namespace", "timeseries",
      [(f"sum by (resource_namespace, kind) (max by (kind, resource_namespace, ready, synced) (vpn_operator_resources{{{SEL}}}))",
        "{{resource_namespace}} {{kind}}")], 0, 44, 12, 8, stack=True)
panel("Not Ready or not Synced by namespace", "timeseries",
      [(f'sum by (resource_namespace, kind) (max by (kind, resource_namespace, ready, synced) (vpn_operator_resources{{{SEL}, ready!="True"}}))',
        "{{resource_namespace}} {{kind}} not Ready"),
       (f'sum by (resource_namespace, kind) (max by (kind, resource_namespace, ready, synced) (vpn_operator_resources{{{SEL}, ready="True", synced!="True"}}))',
        "{{resource_namespace}} {{kind}} Ready, not Synced")], 12, 44, 12, 8)
panel("Time to Ready", "timeseries",
      [(f"histogram_quantile({q}, sum by (le, kind) (rate(vpn_operator_time_to_ready_seconds_bucket{{{SEL}}}[$__range])))",
        f"{{{{kind}}}} p{int(q * 100)}") for q in (0.5, 0.95)], 0, 52, 12, 8, unit="s",
      description="From creation to first Ready, over the dashboard's time range: resources whose spec was never edited "
                  "(generation 1). The highest bucket is one hour.")
panel("Work queue", "timeseries",
      [(f"sum by (controller) (vpn_operator_reconciles_queued{{{SEL}}})", "{{controller}} queued"),
       (f"sum by (controller) (vpn_operator_reconciles_in_flight{{{SEL}}})", "{{controller}} running")],
      12, 52, 12, 8,
      description="Queued: objects a watch event, a dependency or a drift check triggered whose reconcile has not started "
                  "(timer requeues are kube-runtime's and not counted). Running: reconciles in progress.")
panel("Queue wait", "timeseries",
      [(f"histogram_quantile({q}, sum by (le, controller) (rate(vpn_operator_reconcile_queue_wait_seconds_bucket{{{SEL}}}[$__rate_interval])))",
        f"{{{{controller}}}} p{int(q * 100)}") for q in (0.5, 0.95)], 0, 60, 12, 8, unit="s",
      description="From a trigger to the start of its reconcile: a worker under the concurrency limit, or the object's running reconcile.")
panel("Requeues by cause", "timeseries",
      [(f"sum by (controller, cause) (rate(vpn_operator_requeues_total{{{SEL}}}[$__rate_interval]))",
        "{{controller}} {{cause}}")], 12, 60, 12, 8, unit="ops", stack=True,
      description="next_look: a successful reconcile's next poll or drift check; otherwise the error category of a failed one.")
panel("CPU", "timeseries",
      [(f"rate(process_cpu_seconds_total{{{SEL}}}[$__rate_interval])", "{{pod}}")], 0, 68, 8, 8, unit="percentunit")
panel("Resident memory", "timeseries",
      [(f"process_resident_memory_bytes{{{SEL}}}", "{{pod}}")], 8, 68, 8, 8, unit="bytes")
panel("Open file descriptors", "timeseries",
      [(f"process_open_fds{{{SEL}}}", "{{pod}} open"), (f"process_max_fds{{{SEL}}}", "{{pod}} limit")], 16, 68, 8, 8)

dashboard = {
    "uid": "altostrat-vpn-operator",
    "title": "Altostrat VPN operator",
    "description": "Reconciles, resource readiness and sync, time to Ready, work queue, Altostrat API traffic and rate limiting, and process resources of the Altostrat VPN operator.",
    "tags": ["altostrat", "vpn", "operator"],
    "editable": True,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "timezone": "",
    "links": [],
    "annotations": {"list": []},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "options": []},
        {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS,
         "query": "label_values(vpn_operator_leader, namespace)", "definition": "label_values(vpn_operator_leader, namespace)",
         "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "options": []},
        {"name": "job", "label": "Job", "type": "query", "datasource": DS,
         "query": 'label_values(vpn_operator_leader{namespace=~"$namespace"}, job)',
         "definition": 'label_values(vpn_operator_leader{namespace=~"$namespace"}, job)',
         "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "options": []},
    ]},
    "panels": panels,
}

OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps(dashboard, indent=2) + "\n")
