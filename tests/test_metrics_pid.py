"""Multiprocess metrics with the pid remembered (not asked of the kernel per inc): each forked worker still
writes its own file, so /metrics sums the workers instead of mixing them up."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def test_each_forked_process_counts_in_a_file_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry, Counter, values
    from prometheus_client.multiprocess import MultiProcessCollector

    from formrelay import metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)  # put back what other tests use afterwards
    metrics.use_multiprocess()
    counter = Counter("pid_test_total", "test", ["who"], registry=None)
    counter.labels("parent").inc()
    child = os.fork()
    if child == 0:  # pragma: no cover (runs in the child)
        try:
            counter.labels("child").inc(2)
            counter.labels("parent").inc(3)  # a value made before the fork: must move to the child's file
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    files = sorted(p.name for p in tmp_path.glob("counter_*.db"))
    assert files == sorted({f"counter_{os.getpid()}.db", f"counter_{child}.db"})
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))
    totals = {s.labels["who"]: s.value for m in registry.collect() for s in m.samples if s.name == "pid_test_total"}
    assert totals == {"parent": 4.0, "child": 2.0}
