"""Prometheus metrics of one gateway, in its own registry (several apps can live in one test process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def _stat(engine_stats: Callable[[], dict[str, int]], key: str) -> Callable[[], float]:
    return lambda: engine_stats().get(key, 0)


class Metrics:
    def __init__(
        self,
        engine_stats: Callable[[], dict[str, int]],
        cert_days_left: Callable[[], float] | None = None,
        forward_lag: tuple[list[str], Callable[[], dict[str, int]]] | None = None,
        replicas: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "appliance_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.tokens = Counter(
            "appliance_tokens", "Tokens by kind (prompt, completion, reasoning)", ["kind"], registry=r
        )
        # groups come from the policy pack and models from the active bundles: few label values, never keys
        self.usage_tokens = Counter(
            "appliance_usage_tokens",
            "Tokens by group (policy pack), model and kind",
            ["group", "model", "kind"],
            registry=r,
        )
        self.ttft = Histogram(
            "appliance_time_to_first_token_seconds", "Time to first token", registry=r, buckets=_LATENCY_BUCKETS
        )
        self.latency = Histogram(
            "appliance_request_seconds", "Request latency by route", ["route"], registry=r, buckets=_LATENCY_BUCKETS
        )
        self.decisions = Counter(
            "appliance_policy_decisions",
            "Policy decisions by direction and action",
            ["direction", "action"],
            registry=r,
        )
        self.audit_append = Histogram(
            "appliance_audit_append_seconds",
            "Durable audit append latency",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
        )
        # rule ids come from the policy pack: few label values
        self.classifier_verdicts = Counter(
            "appliance_classifier_verdicts",
            "Classifier rule verdicts by rule, side, verdict (violation, safe, error) and whether cached",
            ["rule", "side", "verdict", "cached"],
            registry=r,
        )
        self.outcome_failures = Counter(
            "appliance_audit_outcome_failures", "Requests whose outcome record could not be written", registry=r
        )
        self.auth_throttled = Counter(
            "appliance_auth_failures_throttled",
            "Failed authentications answered 429 and recorded in aggregate",
            registry=r,
        )
        occupancy = Gauge("appliance_engine_batch_occupancy", "Sequences in the running batch", registry=r)
        queued = Gauge("appliance_engine_queue_depth", "Requests waiting for a batch slot", registry=r)
        if cert_days_left is not None:
            expiry = Gauge(
                "appliance_tls_certificate_days_left", "Days until the API's TLS certificate expires", registry=r
            )
            expiry.set_function(cert_days_left)
        if forward_lag is not None:  # (collector names, their lags read from the database at each scrape)
            names, lags = forward_lag
            lag = Gauge(
                "appliance_audit_forward_lag_records",
                "Audit records not yet delivered to each syslog collector (head seq minus the collector's cursor)",
                ["collector"],
                registry=r,
            )
            for name in names:
                lag.labels(name).set_function(_stat(lags, name))
        occupancy.set_function(lambda: engine_stats().get("running", 0))
        queued.set_function(lambda: engine_stats().get("waiting", 0))
        kv = Gauge(
            "appliance_engine_kv_bytes",
            "KV cache bytes: in_use (held by sequences), reserved (admitted "
            "at their longest), budget (admission limit), allocated (slot buffers), cached (prefix cache blocks)",
            ["kind"],
            registry=r,
        )
        for kind in ("in_use", "reserved", "budget", "allocated", "cached"):
            kv.labels(kind).set_function(
                _stat(engine_stats, "kv_budget_bytes" if kind == "budget" else f"kv_bytes_{kind}")
            )

        if replicas is not None:  # a Serve backend: the LLM replicas running on each node
            r.register(_Replicas(replicas))

    def observe_outcome(self, usage, output_action: str, group: str, model: str) -> None:
        """The one hook for a finished generation: its tokens (also per group and model) and its output
        decision."""
        for kind in ("prompt", "completion", "reasoning"):
            count = getattr(usage, f"{kind}_tokens")
            self.tokens.labels(kind).inc(count)
            self.usage_tokens.labels(group, model, kind).inc(count)
        self.decisions.labels("output", output_action).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Replicas(Collector):
    """One sample per node at each scrape (a node that left has none); node names are cluster members or a
    bounded few addresses (serving/nodes.py)."""

    def __init__(self, replicas: Callable[[], dict[str, int]]) -> None:
        self._replicas = replicas

    def collect(self):
        family = GaugeMetricFamily("appliance_serve_replicas", "Running LLM replicas per node", labels=["node"])
        for node, count in sorted(self._replicas().items()):
            family.add_metric([node], count)
        yield family
