"""One caption job as the model worker tracks it, from admission to its outcome: a Runware caption task or a chat
call (OpenAI, Responses, Ollama, the page), its client, the model that must answer it, its images once read, and
its completion."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from llava_edge.errors import LlavaEdgeError
from llava_edge.schema import CaptionRequest
from llava_edge.server.resident_model import ChatCall
from llava_edge.server.task_errors import failure, internal_error
from llava_edge.server.task_results import Outcome
from llava_edge.server.work_options import WorkOptions


@dataclass(eq=False)
class Job:
    """An admitted caption job (see ``ModelWorker``): exactly one of ``request`` (a Runware task) and ``chat``."""

    request: CaptionRequest | None = None
    """A Runware caption task, as parsed; ``raw`` is the task as sent."""
    raw: dict[str, Any] = field(default_factory=dict)
    chat: ChatCall | None = None
    """A chat call (OpenAI, Responses, Ollama, the page): answered with a CaptionResult."""
    model: str = ""
    """The id of the installed model that must answer it (swapped in first when another is resident)."""
    client: str = ""
    """Whose it is (``read_policy.client_key``): fetch slots are shared round-robin between clients."""
    work: WorkOptions = field(default_factory=WorkOptions)
    """Its budget, keep-alive and priority class (a chat call's own, see ``__post_init__``)."""
    on_outcome: Callable[[Outcome], None] | None = None
    """Called once with the outcome before the caller gets it (Runware: kept for getResponse and delivered)."""
    future: Future[Outcome] = field(default_factory=Future)
    images: list[bytes] = field(default_factory=list)
    """The image bytes (one for a Runware task, one or more for a chat call), once read; the job enters
    the model queue only then."""
    admitted: float = field(default_factory=time.monotonic)
    """When it was admitted (the latest request's ``keep_alive`` wins)."""
    arrived: float = 0.0
    """When it entered the model queue (``time.monotonic``)."""
    completed: threading.Event = field(default_factory=threading.Event)
    abandoned: threading.Event = field(default_factory=threading.Event)
    """Set when nobody waits for this job any more: its caption stops at the next step."""

    def __post_init__(self) -> None:
        if self.chat is not None:
            self.work = self.chat.work

    @property
    def keep_alive(self) -> float | None:
        """Seconds the model stays loaded after this job's answer; None: the server's ``--keep-alive``."""
        return self.work.keep_alive

    @property
    def priority(self) -> str:
        """``interactive`` or ``background`` (``work_options``)."""
        return self.work.priority

    @property
    def load_only(self) -> bool:
        """An Ollama request with no prompt: it only loads the model (or, with ``keep_alive`` 0, unloads it)."""
        return self.chat is not None and self.chat.load_only

    @property
    def sources(self) -> tuple[str, ...]:
        """Its image references as the request gave them."""
        if self.chat is not None:
            return self.chat.images
        return (self.request.image,) if self.request is not None else ()

    @property
    def label(self) -> str:
        """How the log names it."""
        return f"caption task {self.request.task_uuid}" if self.request is not None else "a chat call"

    @property
    def wanted_unattended(self) -> bool:
        """Its result is wanted even when its connection closes: a Runware task delivered async, to a webhook or
        to an upload endpoint."""
        request = self.request
        return request is not None and (request.delivery_method == "async" or bool(request.webhook_url)
                                        or bool(request.upload_endpoint))

    def failed(self, error: LlavaEdgeError) -> Outcome:
        """A failed outcome, carrying a Runware task's identity."""
        return failure(error, self.request) if self.request is not None else Outcome.failure(error)

    def failed_unexpectedly(self) -> Outcome:
        """The outcome of something unexpected (logged separately)."""
        request = self.request
        return self.failed(internal_error(request.task_type if request else None,
                                          request.task_uuid if request else None))
