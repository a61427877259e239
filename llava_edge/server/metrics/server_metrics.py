"""``ServerMetrics``: one Prometheus registry per server (never the process's default one: one process may run
several servers), holding what the server counts about requests, Runware tasks and its queue, and the model's
metrics (``model_metrics``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llava_edge.server.metrics.model_metrics import ModelMetrics
from llava_edge.server.work_options import PRIORITIES

if TYPE_CHECKING:
    from llava_edge.server.resident_model import ResidentModel

RUNWARE_TASK_TYPES = frozenset({"authentication", "caption", "imageCaption", "imageUpload", "getResponse", "ping"})
"""Task types counted by name; any other is counted as ``other``."""
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""Seconds, from a ``/health`` to a queued full-detail caption on a Raspberry Pi."""
QueueDepths = Callable[[], Mapping[str, int]]
"""Waiting jobs per priority class, read at scrape time."""
Transport = Literal["rest", "websocket"]


class ServerMetrics:
    """The server's metrics; ``exposition()`` is the body of ``GET /metrics``."""

    def __init__(self, resident: ResidentModel, queue_depths: QueueDepths):
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("llava_edge_requests", "HTTP requests answered, by route template (unmatched: no "
                                "route), API family and status.", ["route", "api", "status"], registry=registry)
        self.request_seconds = Histogram("llava_edge_request_duration_seconds", "Seconds from a request's arrival "
                                         "to the end of its answer (a stream's last byte), by route template and API "
                                         "family.", ["route", "api"], buckets=REQUEST_BUCKETS, registry=registry)
        self.tasks = Counter("llava_edge_runware_tasks", "Runware tasks answered (REST and WebSocket), by transport, "
                             "task type and status (success or error; async tasks count when accepted).",
                             ["transport", "task_type", "status"], registry=registry)
        queue = Gauge("llava_edge_queue_depth", "Admitted caption jobs not running yet, by priority class.",
                      ["priority"], registry=registry)
        for priority in PRIORITIES:
            queue.labels(priority).set_function(functools.partial(_depth, queue_depths, priority))
        self.model = ModelMetrics(registry, lambda: (resident.captioner.model_name, resident.loaded))
        """The resident model's observer: ``create_app`` hands it to the ``ResidentModel``."""

    def request(self, route: str, api: str, status: int, seconds: float) -> None:
        """An HTTP request was answered (``route``: its template, never the raw path)."""
        self.requests.labels(route, api, str(status)).inc()
        self.request_seconds.labels(route, api).observe(seconds)

    def task(self, transport: Transport, task_type: str | None, ok: bool) -> None:
        """A Runware task was answered; a task type not in ``RUNWARE_TASK_TYPES`` counts as ``other``."""
        kind = task_type if task_type in RUNWARE_TASK_TYPES else "other"
        self.tasks.labels(transport, kind, "success" if ok else "error").inc()

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (``prometheus_client.CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


def _depth(queue_depths: QueueDepths, priority: str) -> float:
    return queue_depths().get(priority, 0)

