"""What operators watch, in Prometheus' format at `GET /metrics` (prometheus-client).

Each runtime has a registry of its own, so that several bots in one process (tests) never
share counters. Beside groupbot's own, the client library's standard process and garbage
collector metrics (`process_resident_memory_bytes`, `python_gc_collections_total`...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=_registry)

    def __post_init__(self) -> None:
        r = self.registry
        self.inbound = Counter(
            "groupbot_inbound", "Inbound webhooks by outcome", ["outcome"], registry=r
        )
        self.routed = Counter(
            "groupbot_routed", "Inbound messages by the route that answered", ["route"], registry=r
        )
        self.handler_errors = Counter(
            "groupbot_handler_errors", "Handlers that failed, by route and kind (error, timeout)",
            ["route", "kind"], registry=r,
        )  # fmt: skip
        self.outbound = Counter(
            "groupbot_outbound", "Send attempts by result (sent, retry, failed)", ["result"],
            registry=r,
        )  # fmt: skip
        self.send_problems = Counter(
            "groupbot_send_problems",
            "Sends that did not go, by kind: rate_limited (429), server_error (5xx), "
            "unreachable (no connection, no answer, a timeout), rejected (another 4xx), error",
            ["kind"], registry=r,
        )  # fmt: skip
        self.handle_seconds = Histogram(
            "groupbot_handle_seconds", "From claim to answer queued, per inbound message",
            registry=r,
        )  # fmt: skip
        self.send_seconds = Histogram(
            "groupbot_send_seconds", "One request to the Messages API", registry=r
        )
        self.delivery_seconds = Histogram(
            "groupbot_webhook_to_last_member_seconds",
            "From a webhook stored to its answer accepted by the API for the last member",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r,
        )  # fmt: skip
        self.info = Info(
            "groupbot", "The running bot: its version and provider (simulator or vonage)",
            registry=r,
        )  # fmt: skip
        self.store_up = Gauge(
            "groupbot_store_up", "1 if the store answered this scrape's queue counts, else 0",
            registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "groupbot_queue_depth", "Items waiting or in progress, by queue", ["queue"], registry=r
        )
        self.oldest_seconds = Gauge(
            "groupbot_queue_oldest_seconds", "Age of the oldest item waiting, by queue",
            ["queue"], registry=r,
        )  # fmt: skip

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
