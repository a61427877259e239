"""The server's one resident model, and chat calls run on it.

A chat call (OpenAI or Ollama) may name another installed model: it is swapped in, in the model thread
between two captions. The resident model is closed first, so one model is in memory at a time; should the
new one fail to load, the previous one is loaded again and the error is that call's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llava_edge.api import CaptionDone
from llava_edge.errors import CaptionCancelledError, LlavaEdgeError
from llava_edge.events import LOAD, Progress, TextDelta
from llava_edge.generation import GenerationOptions
from llava_edge.server.image_reading import fetching_from
from llava_edge.server.settings import ServerSettings
from llava_edge.server.task_results import Outcome
from llava_edge.structured import StructuredOutput
from llava_edge.token_budget import TokenBudget

if TYPE_CHECKING:
    from llava_edge.api import Captioner

_log = logging.getLogger("llava_edge.server.resident_model")
EventSink = Callable[[Progress | TextDelta], None]


@dataclass(frozen=True)
class ChatCall:
    """A caption asked through the OpenAI or Ollama API: the images, the rendered prompt (one text per
    image, text ``i`` following image ``i``) and the options. Its outcome carries the ``CaptionResult``
    (timings and token counts), not a Runware item."""

    images: tuple[str, ...]
    prompt: tuple[str, ...]
    options: GenerationOptions
    detail: str = "auto"
    on_event: EventSink | None = None
    """Called from the model thread with each progress event and text delta, as they come."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set when nobody waits for the answer any more (the client left): the caption stops at its next step."""
    model: str | None = None
    """Another installed model the request named: it is swapped in (a ``LOAD`` progress event) first."""
    structure: StructuredOutput | None = None
    """``response_format`` / ``format``: the checked schema and its grammar; the answer is JSON that follows it."""
    budget: TokenBudget | None = None
    """``image_tokens`` / ``token_selection``: at most that many image tokens fed per image; ``None``: all."""


class ResidentModel:
    """The loaded model as the server uses it (``captioner``: image fetches under the server's rules)."""

    def __init__(self, captioner: Captioner, settings: ServerSettings):
        self.settings = settings
        self.captioner = fetching_from(captioner, settings)
        self.start_model = captioner.model_name
        """The model ``serve`` loaded: the generic names (``llava``, ``llava:7b``) mean it."""
        self.start_files = captioner.files
        self._loaded_here: Captioner | None = None
        """A model loaded by a swap: ``close`` frees it (the caller's own model is the caller's to close)."""

    def run_chat(self, call: ChatCall, images: list[bytes]) -> Outcome:
        """Run a chat call's caption as a stream, in the model thread: events go to ``on_event``; a cancelled
        call stops at the next step (closing the stream cancels the caption)."""
        sources: list[Any] = list(images)
        try:
            if call.model is not None:
                self.swap_to(call.model, call.on_event)
            tokens, selection = (call.budget.tokens, call.budget.selection) if call.budget else (None, None)
            with closing(self.captioner.stream(sources, list(call.prompt), detail=call.detail,
                                               options=call.options, schema=call.structure, image_tokens=tokens,
                                               token_selection=selection)) as events:
                for event in events:
                    if call.cancelled.is_set():
                        raise CaptionCancelledError("The client left; the caption was stopped.")
                    if isinstance(event, CaptionDone):
                        return Outcome({"text": event.result.text}, result=event.result)
                    if call.on_event is not None:
                        call.on_event(event)
        except LlavaEdgeError as err:
            return Outcome.failure(err)
        return Outcome.failure(LlavaEdgeError("The caption ended without a result."))

    def swap_to(self, model: str, on_event: EventSink | None = None) -> None:
        """Make ``model`` the resident one (see the module docstring); ``LOAD`` progress at 0/1 and 1/1."""
        if model == self.captioner.model_name:
            return
        report = on_event or (lambda event: None)
        began = time.perf_counter()
        report(Progress.measured(LOAD, 0, 1, 0.0))
        previous = self.captioner
        previous.close()
        try:
            loaded = previous.another(model)
        except LlavaEdgeError as err:
            _log.warning("swap to %s failed after %.1f s: %s; loading %s again", model, time.perf_counter() - began,
                         json.dumps(err.message[:300]), previous.model_name)
            self._install(previous.another(previous.model_name))
            raise
        self._install(loaded)
        _log.info("swapped %s out and %s in (%.1f s)", previous.model_name, model, time.perf_counter() - began)
        report(Progress.measured(LOAD, 1, 1, time.perf_counter() - began))

    def close(self) -> None:
        """Free a model a swap loaded; the one given at the start belongs to the caller."""
        if self._loaded_here is not None:
            self._loaded_here.close()

    def _install(self, captioner: Captioner) -> None:
        self.captioner = fetching_from(captioner, self.settings)
        self._loaded_here = captioner
