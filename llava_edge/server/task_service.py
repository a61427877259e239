"""Runware task dispatch for the server: ``caption``/``imageCaption``, ``imageUpload``, ``getResponse``, ``ping``
and ``authentication``, with the results and their delivery; the model side is the one ``ModelWorker``.

A caption task becomes a job for the model worker (``model_worker``: admission, image reading, the queue, the
model thread, drain, cancellation, complete-once), as every chat call does. Every caption task is registered by
taskUUID (``conflictTaskUUID`` on reuse while it runs or its result is kept); its outcome is kept for ``ttl``
seconds for ``getResponse`` and, when asked, delivered to ``webhookURL`` / ``uploadEndpoint``; a sync task whose
WebSocket closed is abandoned. Whatever a task raises becomes that task's error.

Shutdown: the worker drains (``begin_shutdown``: new captions refused at once, the admitted ones finish until
``shutdown_timeout``, then the rest fail with ``serviceUnavailable``, delivered to their webhooks like any
result); ``stop`` then gives pending deliveries ``delivery_flush_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from llava_edge.errors import LlavaEdgeError
from llava_edge.schema import RESPONSE_TASK_TYPE, CaptionRequest, parse_caption_request, task_identity
from llava_edge.server.auth import AuthGate
from llava_edge.server.delivery import Deliverer
from llava_edge.server.jobs import Job
from llava_edge.server.model_listing import task_model
from llava_edge.server.model_worker import ModelWorker
from llava_edge.server.resident_model import ResidentModel
from llava_edge.server.session_tasks import ResponseLookup, authenticate, ping
from llava_edge.server.settings import ServerSettings
from llava_edge.server.task_errors import internal_error, unknown_task
from llava_edge.server.task_results import Outcome, TaskRegistry
from llava_edge.server.uploads import UPLOAD_TASK_TYPE, ImageUploads
from llava_edge.server.work_options import runware_work

if TYPE_CHECKING:
    from llava_edge.api import Captioner

CANCEL_GRACE = 5.0
"""Seconds a caption cancelled at the shutdown deadline gets to unwind, so the model can be closed."""
_log = logging.getLogger("llava_edge.server.task_service")


class TaskService:
    """Answers Runware tasks; holds the server's model worker (``worker``), which chat routes submit to."""

    def __init__(self, captioner: Captioner, settings: ServerSettings):
        self.resident = ResidentModel(captioner, settings)
        self.settings = settings
        self.registry = TaskRegistry(max_kept=settings.max_kept_results)
        self.auth = AuthGate(settings)
        self.deliverer = Deliverer(
            attempts=settings.delivery_attempts, backoff=settings.delivery_backoff,
            limits=settings.outbound(settings.delivery_limits), max_pending=settings.max_pending_deliveries,
        )
        self.worker = ModelWorker(self.resident, settings)
        self._handlers: dict[str, Callable[[dict[str, Any], str], Awaitable[Outcome]]] = {
            "caption": self._caption, "imageCaption": self._caption, UPLOAD_TASK_TYPE: ImageUploads(self.resident),
            "getResponse": ResponseLookup(self.registry), "ping": ping,
        }

    @property
    def captioner(self) -> Captioner:
        """The resident model (it changes when a request swaps another in)."""
        return self.resident.captioner

    @property
    def worker_restarts(self) -> int:
        """Times the model thread's loop was restarted."""
        return self.worker.thread.restarts

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.worker.alive and not self.worker.thread.stopping.is_set():
            self.worker.start()
            self.deliverer.start()

    def begin_shutdown(self, timeout: float | None = None) -> None:
        """Refuse new captions from now on and give the admitted ones ``timeout`` seconds (default: the settings'
        ``shutdown_timeout``) to finish; a later call may only shorten that. Returns at once."""
        self.worker.begin_shutdown(timeout)

    def hurry(self) -> None:
        """End the drain and the delivery flush now (a second signal). Safe to call from a signal handler:
        it takes no lock the interrupted code could hold."""
        self.worker.hurry()

    def stop(self) -> bool:
        """Drain (see ``begin_shutdown``), then deliver what is pending for ``delivery_flush_timeout`` seconds.

        Returns:
            True when the model is idle; False when a caption still runs in it past the deadline (its
            task was already reported failed), so the captioner must not be closed under it.
        """
        self.worker.stop(CANCEL_GRACE)  # a cancelled caption unwinds at its next llama.cpp batch
        self.deliverer.close(self.settings.delivery_flush_timeout, cancel=self.worker.hurried)
        if self.model_idle:
            self.resident.close()
        return self.model_idle

    @property
    def model_idle(self) -> bool:
        """True unless the model thread is running (or inside a caption past the shutdown deadline)."""
        return not self.worker.alive

    def health(self) -> dict[str, Any]:
        live, kept = self.registry.counts()
        depths = self.queue_depths()
        status = ("degraded" if self.resident.failed else "ok") if self.worker.alive else "stopped"
        return {
            "status": "draining" if self.worker.draining.is_set() and status == "ok" else status,
            "model": self.captioner.model_name,
            "loaded": self.resident.loaded,
            "queueDepth": sum(depths.values()),
            "queueDepths": depths,
            "queueLimit": self.settings.max_queue,
            "running": self.worker.running,
            "liveTasks": live,
            "keptResults": kept,
            "pendingDeliveries": self.deliverer.pending,
            "workerRestarts": self.worker_restarts,
            "lastLoadError": self.resident.last_load_error,
        }

    def queue_depths(self) -> dict[str, int]:
        """Admitted jobs not started yet (reading their images or queued), by priority class."""
        return self.worker.queue_depths()

    # -- dispatch -------------------------------------------------------------------------------

    async def run(self, raw: Any, *, base_url: str, client: str = "", background: bool = False) -> Outcome:
        """Answer one task (any type but authentication). ``base_url`` roots the ``imageURL`` of uploads;
        ``client`` is whose it is (``read_policy.client_key``); ``background``: the request's header asks for
        background priority (``work_options``)."""
        task_type, task_uuid = task_identity(raw)
        try:
            handler = self._handlers.get(task_type or "")
            if not isinstance(raw, dict) or handler is None:
                raise unknown_task(raw, task_type)
            if handler == self._caption:
                return await self._caption(raw, base_url, client, background)
            return await handler(raw, base_url)
        except LlavaEdgeError as err:
            err.task_type = err.task_type or task_type
            err.task_uuid = err.task_uuid or task_uuid  # echoed as sent, so the client can route the error
            return Outcome.failure(err)
        except Exception:  # every task is answered, whatever it raised
            _log.exception("task %s failed unexpectedly", task_uuid)
            return Outcome.failure(internal_error(task_type, task_uuid))

    def authenticate(self, raw: dict[str, Any], client: str) -> Outcome:
        """Check an ``authentication`` task from ``client`` (an address) (``session_tasks.authenticate``)."""
        return authenticate(self.auth, raw, client)

    async def _caption(self, raw: dict[str, Any], base_url: str, client: str = "",
                       background: bool = False) -> Outcome:
        """Register the task and hand it to the model worker; an async one is answered at once."""
        request = parse_caption_request(raw)
        model, work = runware_work(request, raw, background=background)
        job = Job(request, raw, model=task_model(model, self), client=client, work=work,
                  on_outcome=lambda outcome: self._keep_and_deliver(request, outcome))
        ttl = request.ttl if request.ttl is not None else self.settings.result_ttl
        self.registry.begin(request.task_uuid, ttl, task_type=request.task_type)
        try:
            self.worker.admit(job, base_url)
        except LlavaEdgeError:
            self.registry.discard(request.task_uuid)
            raise
        if request.delivery_method == "async":
            return Outcome({"taskType": RESPONSE_TASK_TYPE, "taskUUID": request.task_uuid})
        return await asyncio.shield(asyncio.wrap_future(job.future))

    def abandon(self, task_uuid: str) -> None:
        """Nobody waits for this sync task any more (its WebSocket closed): stop it (``ModelWorker.abandon``).
        Async tasks and tasks with a webhook or uploadEndpoint are never abandoned: their results are wanted."""
        self.worker.abandon(lambda job: job.request is not None and job.request.task_uuid == task_uuid,
                            "The client left before this task ran.")

    def _keep_and_deliver(self, request: CaptionRequest, outcome: Outcome) -> None:
        """Keep the outcome for getResponse and send it to the task's webhook and uploadEndpoint."""
        self.registry.finish(request.task_uuid, outcome)
        for url, method in ((request.webhook_url, "POST"), (request.upload_endpoint, "PUT")):
            if url is not None:
                self.deliverer.submit(url, method, outcome.with_status().item)
