"""The task registry stays bounded: results replaced, dropped or discarded leave no expiry entries behind for
longer than it takes to rebuild the heap, and expiry still follows each task's own ttl."""

from __future__ import annotations

import pytest

from llava_edge.errors import TaskNotFoundError
from llava_edge.server.task_results import Outcome, TaskRegistry


def _finish(registry: TaskRegistry, task_uuid: str, ttl: float) -> None:
    registry.begin(task_uuid, ttl)
    registry.finish(task_uuid, Outcome({"taskUUID": task_uuid}))


def test_many_results_over_the_cap_keep_the_expiry_heap_small() -> None:
    now = [0.0]
    registry = TaskRegistry(max_kept=10, clock=lambda: now[0])
    for n in range(20_000):
        _finish(registry, f"t{n}", ttl=3600)  # long ttls: nothing comes due, the cap drops the oldest
        assert len(registry._expiry) <= 2 * 10 + 64
    assert registry.counts() == (0, 10)
    assert registry.lookup("t19999") == Outcome({"taskUUID": "t19999"})
    with pytest.raises(TaskNotFoundError):
        registry.lookup("t19989")
    now[0] += 3601
    assert registry.counts() == (0, 0) and registry._expiry == []


def test_discarded_and_refinished_tasks_leave_no_stale_entries() -> None:
    registry = TaskRegistry(max_kept=1000, clock=lambda: 0.0)
    for n in range(3):
        registry.begin(f"again{n}", 600)
    for n in range(5000):
        _finish(registry, f"gone{n}", ttl=600)
        registry.discard(f"gone{n}")
        registry.finish(f"again{n % 3}", Outcome({"n": n}))  # finished again and again: one result each
        assert len(registry._expiry) <= 2 * 3 + 64
    assert registry.counts() == (0, 3)
    assert registry.lookup("again1") == Outcome({"n": 4999})


def test_expiry_follows_each_ttl_across_rebuilds() -> None:
    now = [1000.0]
    registry = TaskRegistry(max_kept=100, clock=lambda: now[0])
    for n in range(50):
        _finish(registry, f"short{n}", ttl=10)
    for n in range(200):  # churn through replaced results to force rebuilds
        _finish(registry, f"churn{n}", ttl=5)
        registry.discard(f"churn{n}")
    _finish(registry, "long", ttl=100)
    assert registry.counts() == (0, 51)
    now[0] += 11
    assert registry.counts() == (0, 1)
    assert registry.lookup("long") == Outcome({"taskUUID": "long"})
    registry.begin("short3", 10)  # expired: the UUID is free again
    now[0] += 90
    with pytest.raises(TaskNotFoundError):
        registry.lookup("long")
    assert registry.counts() == (1, 0)
