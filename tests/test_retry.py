"""bot/retry.py: exponential backoff with equal jitter, Retry-After as a floor, bounded attempts."""

from __future__ import annotations

import pytest

from bot.retry import RetryPolicy

SAMPLES = 200


def delays(policy: RetryPolicy, attempts: int, retry_after: float | None = None) -> list[float]:
    return [policy.delay(attempts, retry_after) for _ in range(SAMPLES)]


@pytest.mark.parametrize(("attempts", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0)])
def test_delay_lies_between_half_the_ceiling_and_the_ceiling(attempts: int, ceiling: float) -> None:
    policy = RetryPolicy(base_seconds=1.0, max_delay_seconds=300.0)

    sampled = delays(policy, attempts)

    assert all(ceiling / 2 <= d <= ceiling for d in sampled)


def test_delay_is_jittered() -> None:
    sampled = delays(RetryPolicy(base_seconds=1.0), 4)

    assert len(set(sampled)) > 1
    # Equal jitter spreads over the whole upper half of the ceiling (8 s here).
    assert min(sampled) < 5.0
    assert max(sampled) > 7.0


def test_delays_grow_exponentially_with_attempts() -> None:
    policy = RetryPolicy(base_seconds=0.5, max_delay_seconds=1000.0)

    for attempts in range(1, 10):
        ceiling = 0.5 * 2.0 ** (attempts - 1)
        sampled = delays(policy, attempts)
        assert min(sampled) >= ceiling / 2
        assert max(sampled) <= ceiling
        # Every delay after the next failure is at least as long as any delay after this one.
        assert min(delays(policy, attempts + 1)) >= max(sampled)


@pytest.mark.parametrize("attempts", [10, 20, 64, 200])
def test_delay_is_capped_at_max_delay_seconds(attempts: int) -> None:
    policy = RetryPolicy(base_seconds=1.0, max_delay_seconds=60.0)

    sampled = delays(policy, attempts)

    assert all(30.0 <= d <= 60.0 for d in sampled)


def test_delay_stays_capped_for_very_large_attempt_counts() -> None:
    # A policy allowed thousands of attempts must not overflow computing 2 ** attempts.
    policy = RetryPolicy(max_attempts=5000, base_seconds=1.0, max_delay_seconds=60.0)

    assert 30.0 <= policy.delay(2000) <= 60.0


def test_retry_after_is_a_floor_above_the_backoff() -> None:
    policy = RetryPolicy(base_seconds=1.0, max_delay_seconds=300.0)

    assert all(d == 30.0 for d in delays(policy, 1, retry_after=30.0))


def test_retry_after_beyond_max_delay_is_still_honoured() -> None:
    policy = RetryPolicy(base_seconds=1.0, max_delay_seconds=60.0)

    assert policy.delay(1, retry_after=120.0) == 120.0


def test_retry_after_below_the_backoff_does_not_shorten_it() -> None:
    policy = RetryPolicy(base_seconds=1.0, max_delay_seconds=300.0)

    sampled = delays(policy, 5, retry_after=1.0)  # ceiling 16 s

    assert all(8.0 <= d <= 16.0 for d in sampled)


def test_retry_after_zero_keeps_the_backoff() -> None:
    policy = RetryPolicy(base_seconds=2.0)

    assert all(1.0 <= d <= 2.0 for d in delays(policy, 1, retry_after=0.0))


def test_next_attempt_at_is_now_plus_the_delay() -> None:
    policy = RetryPolicy(base_seconds=1.0)
    now = 1_000_000.0

    at = policy.next_attempt_at(attempts=3, created_at=now - 10, now=now)

    assert at is not None
    assert now + 2.0 <= at <= now + 4.0


def test_next_attempt_at_honours_retry_after() -> None:
    policy = RetryPolicy(base_seconds=0.01)
    now = 1_000_000.0

    at = policy.next_attempt_at(attempts=1, created_at=now, now=now, retry_after=3.0)

    assert at == now + 3.0


def test_next_attempt_at_is_none_once_max_attempts_are_used() -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=0.01)
    now = 1_000_000.0

    assert policy.next_attempt_at(attempts=1, created_at=now, now=now) is not None
    assert policy.next_attempt_at(attempts=2, created_at=now, now=now) is not None
    assert policy.next_attempt_at(attempts=3, created_at=now, now=now) is None
    assert policy.next_attempt_at(attempts=4, created_at=now, now=now) is None


def test_a_single_attempt_policy_never_retries() -> None:
    policy = RetryPolicy(max_attempts=1)

    assert policy.next_attempt_at(attempts=1, created_at=0.0, now=0.0) is None


def test_next_attempt_at_is_none_when_the_ttl_would_be_exceeded() -> None:
    policy = RetryPolicy(base_seconds=1.0, ttl_seconds=3600.0)
    created = 1_000_000.0

    # The first retry waits 0.5 to 1 s: from 10 s before the TTL it fits, from 0.4 s it cannot.
    assert policy.next_attempt_at(attempts=1, created_at=created, now=created + 3590.0) is not None
    assert policy.next_attempt_at(attempts=1, created_at=created, now=created + 3599.6) is None


def test_retry_after_past_the_ttl_gives_up() -> None:
    policy = RetryPolicy(base_seconds=1.0, ttl_seconds=60.0)
    created = 1_000_000.0

    at = policy.next_attempt_at(attempts=1, created_at=created, now=created + 10, retry_after=55.0)

    assert at is None


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"base_seconds": 0.0},
        {"base_seconds": -1.0},
        {"base_seconds": 10.0, "max_delay_seconds": 5.0},
    ],
)
def test_invalid_policies_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_by_default_a_send_is_retried_through_an_outage_until_its_ttl() -> None:
    # Not given up after a few minutes of 5xx: tried again every max_delay_seconds at most.
    policy = RetryPolicy()
    hour_in = policy.next_attempt_at(attempts=40, created_at=0.0, now=3600.0)
    assert hour_in is not None
    assert 3600.0 + 150.0 <= hour_in <= 3600.0 + 300.0
    assert policy.next_attempt_at(attempts=40, created_at=0.0, now=24 * 3600.0) is None
