"""One caption job as the server tracks it, from admission to its outcome: a Runware caption task or a chat
call, its client, the model that must answer it, its images once read, and its completion."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from llava_edge.schema import CaptionRequest
from llava_edge.server.resident_model import ChatCall
from llava_edge.server.task_results import Outcome
from llava_edge.server.work_options import WorkOptions


@dataclass(eq=False)
class Job:
    """An admitted caption job (see ``TaskService``)."""

    raw: dict[str, Any]
    request: CaptionRequest
    chat: ChatCall | None = None
    """Set for OpenAI/Ollama/Responses calls: answered with a CaptionResult, never registered or delivered."""
    model: str = ""
    """The id of the installed model that must answer it (swapped in first when another is resident)."""
    client: str = ""
    """Whose it is (``read_policy.client_key``): fetch slots are shared round-robin between clients."""
    future: Future[Outcome] = field(default_factory=Future)
    images: list[bytes] = field(default_factory=list)
    """The image bytes (one for a Runware task, one or more for a chat call), once read; the job enters
    the model queue only then."""
    work: WorkOptions = field(default_factory=WorkOptions)
    """Its budget, keep-alive and priority class (a chat call's own, see ``__post_init__``)."""
    arrived: float = 0.0
    admitted: float = field(default_factory=time.monotonic)
    """When it was admitted (``queue_places``: the newest job of a client holding too many places gives its up)."""
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
        return self.chat.images if self.chat is not None else (self.request.image,)
