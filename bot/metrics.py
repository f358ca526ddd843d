"""What operators watch, in Prometheus' format at `GET /metrics` (prometheus-client).

Each runtime has a registry of its own, so that several bots in one process (tests) never
share counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


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
            "groupbot_handler_errors", "Handlers that failed or timed out", ["route"], registry=r
        )
        self.outbound = Counter(
            "groupbot_outbound", "Send attempts by result (sent, retry, failed)", ["result"],
            registry=r,
        )  # fmt: skip
        self.handle_seconds = Histogram(
            "groupbot_handle_seconds", "From claim to answer queued, per inbound message",
            registry=r,
        )  # fmt: skip
        self.send_seconds = Histogram(
            "groupbot_send_seconds", "One request to the Messages API", registry=r
        )
        self.queue_depth = Gauge(
            "groupbot_queue_depth", "Items waiting, by queue", ["queue"], registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
