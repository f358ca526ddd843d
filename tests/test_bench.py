"""bench/e2e.py, bench/store.py and bench/client.py, run small: the benchmarks work from a
fresh clone, on both stores, and every figure they print is there and believable (speed
itself is for the full run, not for tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = 60


def bench(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one of bench/'s scripts with this Python; it must exit 0."""
    run = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def test_the_end_to_end_benchmark_runs_every_system_and_prints_every_figure() -> None:
    run = bench("bench/e2e.py", "--n", str(N), "--c", "8", "--postgres", timeout=180)
    lines = run.stdout.splitlines()
    header = next(line for line in lines if line.startswith("system"))
    assert header.endswith("peak MB  CPU µs/msg")
    rows = {line[:10].strip(): line[10:].split() for line in lines[lines.index(header) + 1 :]}
    for system in ("baseline", "groupbot", "pg x2"):
        done, per_second, *latencies, peak_mb, cpu_us = rows[system]
        assert done == f"{N}/{N}", system  # every member message of every webhook arrived
        assert float(per_second) > 0
        assert all(float(ms) > 0 for ms in latencies), system
        assert 10 < float(peak_mb) < 1000, system
        assert float(cpu_us) > 0, system
    [ratio] = [line for line in lines if line.startswith("throughput groupbot / baseline:")]
    assert 0 < float(ratio.rpartition(":")[2]) < 10
    # Anything wrong (a webhook not answered 200, a message missing or to the wrong members)
    # is printed after the table, one line a system.
    assert not [line for line in lines if line.startswith(("baseline:", "groupbot:", "pg x2:"))]
    assert "failed" not in run.stderr


def test_the_end_to_end_benchmark_posts_on_schedule_with_a_rate() -> None:
    rate = 200
    run = bench("bench/e2e.py", "--n", str(N), "--rate", str(rate), timeout=120)
    lines = run.stdout.splitlines()
    assert lines[0].startswith(f"N={N} webhooks, {rate} a second (open loop)")
    header = next(line for line in lines if line.startswith("system"))
    rows = {line[:10].strip(): line[10:].split() for line in lines[lines.index(header) + 1 :]}
    assert set(rows) == {"baseline", "groupbot"}  # and no throughput ratio: both run at R
    for system, (done, per_second, *_) in rows.items():
        assert done == f"{N}/{N}", system
        # N webhooks over (N - 1) / R seconds, plus the last one's answer
        assert 0.5 * rate < float(per_second) < 1.05 * rate * N / (N - 1), system


def test_the_end_to_end_benchmark_fails_when_a_bot_cannot_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-python"
    run = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, "bench/e2e.py", "--n", "5", "--python", str(missing)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert run.returncode == 1  # not a table of nothing that reads as a result
    assert "baseline: failed" in run.stderr
    assert "groupbot: failed" in run.stderr


def test_the_store_benchmark_records_every_answer_and_prints_every_figure() -> None:
    lines = bench("bench/store.py", "--n", "100", timeout=120).stdout.splitlines()
    header = next(line for line in lines if line.startswith("system"))
    assert header.split() == ["system", "webhooks/s", "CPU", "µs", "writes", "KB", "written"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 1 :][:2]}
    for system in ("baseline", "groupbot"):
        assert all(float(figure) > 0 for figure in rows[system]), system
    [ratio] = [line for line in lines if line.startswith("CPU a webhook, groupbot / baseline:")]
    assert 0 < float(ratio.rpartition(":")[2]) < 20
    assert lines[-1] == ratio  # no system fell short of 3 answers sent a webhook


def test_the_client_benchmark_answers_every_request_and_prints_every_figure() -> None:
    lines = bench("bench/client.py", "--n", "200", timeout=120).stdout.splitlines()
    header = next(line for line in lines if line.startswith("loop"))
    assert header.split() == ["loop", "client", "requests/s", "CPU", "µs"]
    rows = [line.split() for line in lines[lines.index(header) + 1 :][:4]]
    systems = [
        (loop, client) for loop in ("asyncio", "uvloop") for client in ("aiohttp", "groupbot")
    ]
    assert [tuple(row[:2]) for row in rows] == systems
    assert all(float(figure) > 0 for row in rows for figure in row[2:])
    ratios = [line for line in lines if line.startswith("CPU a request, groupbot / aiohttp")]
    assert len(ratios) == 2
    assert all(0 < float(ratio.rpartition(":")[2]) < 20 for ratio in ratios)
    assert lines[-1] == ratios[-1]  # every request was answered 202
