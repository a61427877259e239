"""Parking: a caption under way steps aside between two of its steps so that other work can use the model.

A caption is a run of steps (a CLIP encode, a prefill batch, a generated token), each one call into llama.cpp.
While ``Parking.allowed(turn)`` is in force, the runtime asks ``turn.wanted()`` before each step; when it says
yes, the caption's sequence state is copied to RAM (llama.cpp's ``llama_state_seq_get_data``: at most
n_ctx x the model's KV bytes per position, 128 KiB for a 7B model in f16), ``turn.run()`` uses the model on this
thread (other captions, from an empty context), and the state is put back; the caption goes on where it was,
with nothing evaluated twice. At most one caption is parked at a time (work run while parked cannot park), and
its state counts against the prefix cache's byte budget while it is out: when the budget cannot hold it (e.g.
``--prefix-cache-mb 0``), the caption does not step aside. The KV cache itself is never doubled.

Parking happens only before a step, never between a step and its use: a prompt's last batch and the sampling
of the first token follow each other directly, so the logits sampled are always the caption's own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import llama_cpp

from llava_edge.errors import RuntimeBackendError
from llava_edge.prefix_cache import PrefixCache, PrefixState
from llava_edge.runtime.sequence_state import restore, snapshot

_log = logging.getLogger("llava_edge.runtime.parking")
Marks = TypeVar("Marks")


class Interleave(Protocol):
    """Other work that may run between two steps of a caption."""

    def wanted(self) -> bool:
        """Asked before each step of the running caption (cheap): True when other work should run now."""

    def run(self) -> None:
        """Run that work, on this thread; raising stops the parked caption (e.g. its client left meanwhile)."""


MakeWay = Callable[[], float]
"""Called before a step: lets waiting work run when it is wanted; the seconds that took (0.0: none ran)."""


class Parking:
    """The runtime's parking place for one caption; see the module docstring."""

    def __init__(self, cache: PrefixCache):
        self._cache = cache
        self._turn: Interleave | None = None

    @property
    def active(self) -> bool:
        """True while a caption may step aside (inside ``allowed``, and not itself running parked work)."""
        return self._turn is not None

    @contextmanager
    def allowed(self, turn: Interleave) -> Iterator[None]:
        """Within this block, captions step aside for ``turn`` when it wants the model."""
        self._turn = turn
        try:
            yield
        finally:
            self._turn = None

    def make_way(self, context: Any, marks: Callable[[], Marks], put_back: Callable[[Marks | None], None],
                 own_prefix: str | None = None) -> float:
        """Before a step of the caption in ``context``: park it and run ``turn`` when it is wanted and its state
        fits the budget. ``marks`` reads what the runtime knows of the context (its resident prefix), and
        ``put_back`` restores it (None: the context was lost, it knows nothing) and readies the context for the
        caption again. ``own_prefix``: the caption's own cached prefix, evicted first to make room (its parked
        state holds it anyway), so the prefixes other work may need stay. The seconds spent parked.

        Raises:
            RuntimeBackendError: the state could not be put back (the caption cannot go on).
            Whatever ``turn.run`` raised, after the caption's state is back.
        """
        turn = self._turn
        if turn is None or not turn.wanted():
            return 0.0
        size = int(llama_cpp.llama_state_seq_get_size(context, 0))
        if not self._cache.reserve(size, evict_first=own_prefix):
            return 0.0
        try:
            began = time.perf_counter()
            self._park_and_run(turn, context, marks, put_back)
            seconds = time.perf_counter() - began
            _log.debug("a caption stepped aside for %.2f s (%d bytes parked)", seconds, size)
            return seconds
        finally:
            self._cache.release(size)

    def _park_and_run(self, turn: Interleave, context: Any, marks: Callable[[], Marks],
                      put_back: Callable[[Marks | None], None]) -> None:
        saved = marks()
        n_past = int(llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(context), 0)) + 1
        parked = snapshot(context, n_past) if n_past else None  # before its first step: nothing to keep
        self._turn = None
        try:
            turn.run()
        finally:
            self._turn = turn
            restored = _put_back(context, parked)
            del parked
            put_back(saved if restored else None)  # a lost context holds no prefix anyone may reuse
            if not restored:
                raise RuntimeBackendError("The parked caption's state could not be put back; send it again.")


def _put_back(context: Any, parked: PrefixState | None) -> bool:
    if parked is None:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        return True
    return restore(context, parked)
