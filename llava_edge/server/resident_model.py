"""The server's one resident model, and chat calls run on it.

A request (on any API) may name another installed model: it is swapped in, in the model thread between two
captions, when the queue policy lets it (``queue_policy``). The resident model is closed first, so one model is
in memory at a time; should the new one fail to load, the previous one is loaded again from its files (the start
model may come from ``--model-path`` and have no name to be loaded by), the error is that request's, and
``/health`` reports it (``lastLoadError``). A failed load never leaves the server answering with a closed model.
Loads, unloads and finished captions are told to the ``observer`` (the server's metrics).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llava_edge.api import CaptionDone, CaptionResult
from llava_edge.errors import CaptionCancelledError, InvalidRequestError, LlavaEdgeError
from llava_edge.events import LOAD, Progress, TextDelta
from llava_edge.generation import GenerationOptions
from llava_edge.server.image_reading import fetching_from
from llava_edge.server.keep_alive import IdleClock, describe, timer_for
from llava_edge.server.public_errors import public_message
from llava_edge.server.settings import ServerSettings
from llava_edge.server.task_results import Outcome
from llava_edge.server.work_options import WorkOptions
from llava_edge.structured import StructuredOutput

if TYPE_CHECKING:
    from llava_edge.api import Captioner

_log = logging.getLogger("llava_edge.server.resident_model")
EventSink = Callable[[Progress | TextDelta], None]
UnloadReason = Literal["idle", "keep_alive_zero", "swap"]
"""Why a model left memory: its keep-alive ran out, a keep-alive of 0 (the server's or the request's) unloaded it
right after the answer, or another model came in."""


class ModelObserver:
    """Told what happens to the resident model, in the model thread; this one ignores it (the server's metrics
    subclass it)."""

    def loaded(self, model: str, seconds: float, *, swap: bool) -> None:
        """``model`` was loaded in ``seconds``; ``swap``: it replaced another model (else: none was in memory)."""

    def unloaded(self, model: str, seconds: float, reason: UnloadReason) -> None:
        """``model`` was freed in ``seconds``."""

    def load_failed(self, model: str) -> None:
        """Loading ``model`` failed (the previous model is loaded again when it can be)."""

    def captioned(self, result: CaptionResult) -> None:
        """A caption finished (any API): its token counts and stage timings."""


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
    """The id of the installed model that answers (``chat.check_model``): swapped in first (a ``LOAD`` progress
    event) when another one is resident; None: the start model."""
    structure: StructuredOutput | None = None
    """``response_format`` / ``format``: the checked schema and its grammar; the answer is JSON that follows it."""
    work: WorkOptions = field(default_factory=WorkOptions)
    """Its image token budget, ``keep_alive`` and priority class (``work_options``)."""
    load_only: bool = False
    """Only load the model (Ollama's request with no prompt), or unload it when ``keep_alive`` is 0."""


class ResidentModel:
    """The loaded model as the server uses it (``captioner``: image fetches under the server's rules)."""

    def __init__(self, captioner: Captioner, settings: ServerSettings):
        self.settings = settings
        self.observer = ModelObserver()
        """Told about loads, unloads and finished captions (``create_app`` sets the server's metrics)."""
        self.captioner = self._observed(fetching_from(captioner, settings))
        self.start_model = captioner.model_name
        """The model ``serve`` loaded: the generic names (``llava``, ``llava:7b``) mean it."""
        self.start_files = captioner.files
        """Its files: it is loaded again from these, never by name (it may come from ``--model-path``)."""
        self.last_load_error: dict[str, Any] | None = None
        """The last failed load (``/health``'s ``lastLoadError``): the model, the error as clients see it, when."""
        self._loaded_here: Captioner | None = None
        """A model loaded by a swap: ``close`` frees it (the caller's own model is the caller's to close)."""
        self._unloaded = False
        """No model is in memory (idle, or a failed swap could not bring the previous one back): the next job
        loads its own."""
        self._failed_load = False
        """The model is out because a load failed (``/health`` says degraded), not because it was idle."""
        self.idle = IdleClock(settings.keep_alive)
        self._timer_asked_at = float("-inf")
        """When the request that last set the keep-alive was admitted (``used``)."""
        """When the model's keep-alive expires (``keep_alive``): set after each answer."""

    @property
    def loaded(self) -> bool:
        """False while no model is in memory (unloaded when idle, or left out by a failed swap)."""
        return not self._unloaded

    @property
    def failed(self) -> bool:
        """True while a failed swap left no model in memory (``/health``: degraded)."""
        return self._unloaded and self._failed_load

    def refuse_unpinned(self, model: str) -> None:
        """Under ``--no-swap`` only the start model answers: refuse a request for any other.

        Raises:
            InvalidRequestError: ``modelPinned``, naming the model that answers.
        """
        start = self.start_model
        if self.settings.pin_model and model != start:
            raise InvalidRequestError(
                f"This server answers with {start} only (it was started with --no-swap); {model} is installed but "
                f"cannot be loaded. Name {start} (or llava), or restart the server without --no-swap.",
                code="modelPinned", parameter="model")

    def used(self, keep_alive: float | None, asked_at: float | None = None) -> None:
        """An answer (or a load-only request) just used the model: its keep-alive restarts, for the request's
        ``keep_alive`` or the server's default, capped by ``--max-keep-alive``. ``asked_at`` (when the request was
        admitted): the latest request's wins, as in Ollama, even when an earlier one ends after it (a background
        caption that stepped aside for it)."""
        if asked_at is not None:
            if asked_at < self._timer_asked_at:
                return
            self._timer_asked_at = asked_at
        self.idle.restart(timer_for(keep_alive, self.settings.keep_alive, self.settings.max_keep_alive))

    def unload_idle(self) -> None:
        """Free the resident model (its prefix cache goes with it), in the model thread: its keep-alive expired
        and no job wants it. The next job loads it again (``ensure``)."""
        if self._unloaded:
            return
        idle, began = self.idle.idle_for(), time.perf_counter()
        self.captioner.close()
        self._unloaded, self._failed_load = True, False
        reason: UnloadReason = "keep_alive_zero" if self.idle.seconds == 0 else "idle"
        self.observer.unloaded(self.captioner.model_name, time.perf_counter() - began, reason)
        _log.info("unloaded %s after %s idle (keep-alive %s); the next request loads it again",
                  self.captioner.model_name, describe(round(idle, 1)), describe(self.idle.seconds))

    def run_chat(self, call: ChatCall, images: list[bytes]) -> Outcome:
        """Run a chat call's caption as a stream, in the model thread, on the resident model (the worker made it
        the call's model first): events go to ``on_event``; a cancelled call stops at the next step (closing
        the stream cancels the caption)."""
        sources: list[Any] = list(images)
        try:
            budget = call.work.budget
            tokens, selection = (budget.tokens, budget.selection) if budget else (None, None)
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

    def ensure(self, model: str, on_event: EventSink | None = None) -> bool:
        """Make ``model`` (an installed model's id) the resident one, in the model thread; True when it had to
        be loaded. The resident model is closed first, so one model is in memory at a time (its prefix cache
        goes with it); ``LOAD`` progress at 0/1 and 1/1.

        Raises:
            LlavaEdgeError: ``model`` could not be loaded; the previous model is resident again (loaded from its
                files), and the error names the model that failed.
        """
        if model == self.captioner.model_name and not self._unloaded:
            return False
        report = on_event or (lambda event: None)
        began = time.perf_counter()
        report(Progress.measured(LOAD, 0, 1, 0.0))
        previous, was_idle, closing_began = self.captioner, self._unloaded, time.perf_counter()
        previous.close()
        if not was_idle:
            self.observer.unloaded(previous.model_name, time.perf_counter() - closing_began, "swap")
        loading = time.perf_counter()
        try:
            loaded = previous.another(self.start_files if model == self.start_model else model)
        except LlavaEdgeError as err:
            self.observer.load_failed(model)
            self._failed(model, err, previous)
            raise
        self._install(loaded)
        self.observer.loaded(self.captioner.model_name, time.perf_counter() - loading, swap=not was_idle)
        self.last_load_error = None
        self.used(None)
        _log.info("%s %s in (%.1f s)", "loaded" if was_idle else f"swapped {previous.model_name} out and", model,
                  time.perf_counter() - began)
        report(Progress.measured(LOAD, 1, 1, time.perf_counter() - began))
        return True

    def _failed(self, model: str, err: LlavaEdgeError, previous: Captioner) -> None:
        """A load of ``model`` failed: bring ``previous`` back from its files, note the failure for ``/health``,
        and make ``err`` say which model failed and what is loaded now."""
        _log.warning("loading %s failed: %s; loading %s again", model, json.dumps(err.message[:300]),
                     previous.model_name)
        try:
            began = time.perf_counter()
            self._install(previous.another(previous.files))
            self.observer.loaded(previous.model_name, time.perf_counter() - began, swap=False)
            now = f"{previous.model_name} is still loaded"
        except LlavaEdgeError as again:
            _log.error("loading %s again failed too: %s", previous.model_name, json.dumps(again.message[:300]))
            self._unloaded, self._failed_load = True, True
            now = "no model is loaded; the next request loads its own"
        err.message = f"Model {model} could not be loaded ({now}): {err.message}"
        err.args = (err.message,)
        self.last_load_error = {"model": model, "error": public_message(err.message), "at": int(time.time())}

    def close(self) -> None:
        """Free a model a swap loaded; the one given at the start belongs to the caller."""
        if self._loaded_here is not None:
            self._loaded_here.close()

    def _install(self, captioner: Captioner) -> None:
        self.captioner = self._observed(fetching_from(captioner, self.settings))
        self._loaded_here = captioner
        self._unloaded = self._failed_load = False

    def _observed(self, captioner: Captioner) -> Captioner:
        """A view of ``captioner`` (the same loaded model) whose finished captions go to the observer; a copy, so the
        caller's captioner (shared by several servers in one process) tells nobody."""
        view = copy.copy(captioner)
        view.on_result = lambda result: self.observer.captioned(result)
        return view
