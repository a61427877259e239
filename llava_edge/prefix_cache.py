"""The image-prefix cache: evaluated model state after ``[INST] <image>``, kept per image and model.

A second question about the same image restores this state instead of encoding the image and
prefilling its (up to 2,880) tokens again. Entries live in memory under a byte budget, least recently
used first out, and optionally on disk so that they survive a restart. Keys are opaque strings made by
the runtime from the model files, the load options, the prompt prefix and the image's pixels.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

_MAGIC = b"LLAVAEDGE-PREFIX-1\n"


@dataclass(frozen=True)
class PrefixState:
    """The llama.cpp sequence state after the prefix, and the number of positions it covers."""

    n_past: int
    data: bytearray
    """Shared with llama.cpp without copies: never modify it."""


class PrefixCache:
    """A thread-safe LRU of ``PrefixState`` within ``max_bytes``, optionally mirrored in ``directory``."""

    def __init__(self, max_bytes: int, directory: str | os.PathLike[str] | None = None):
        self.max_bytes = max_bytes
        self.directory = Path(directory) if directory is not None else None
        self._entries: OrderedDict[str, PrefixState] = OrderedDict()
        self._bytes = 0
        self._reserved = 0
        """Bytes of the budget set aside for a parked caption's state (``reserve``)."""
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """True when states are kept at all: a memory budget, or a directory."""
        return self.max_bytes > 0 or self.directory is not None

    @property
    def size(self) -> int:
        """Bytes held in memory."""
        return self._bytes

    def get(self, key: str) -> PrefixState | None:
        """The state for ``key`` from memory, else from disk; ``None`` when absent."""
        with self._lock:
            state = self._entries.get(key)
            if state is not None:
                self._entries.move_to_end(key)
            else:
                state = self._read(key)
                if state is not None:
                    self._remember(key, state)
            if state is None:
                self.misses += 1
            else:
                self.hits += 1
            return state

    def put(self, key: str, state: PrefixState) -> None:
        """Keep ``state``; a state larger than the whole budget is not kept in memory."""
        with self._lock:
            self._remember(key, state)
            self._write(key, state)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def reserve(self, size: int, evict_first: str | None = None) -> bool:
        """Set ``size`` bytes of the budget aside (a parked caption's state), evicting entries to make room
        (``evict_first`` before the least recently used); False, with nothing changed, when the budget is smaller
        than ``size``. ``release`` gives it back."""
        with self._lock:
            if size > self.max_bytes - self._reserved:
                return False
            self._reserved += size
            over = self._bytes + self._reserved > self.max_bytes
            if over and evict_first is not None and evict_first in self._entries:
                self._bytes -= len(self._entries.pop(evict_first).data)
            self._evict()
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - size)

    def _remember(self, key: str, state: PrefixState) -> None:
        if len(state.data) > self.max_bytes - self._reserved:
            return
        previous = self._entries.pop(key, None)
        self._bytes += len(state.data) - (len(previous.data) if previous else 0)
        self._entries[key] = state
        self._evict()

    def _evict(self) -> None:
        """Least recently used first, until the entries and the reserved bytes fit the budget."""
        while self._entries and self._bytes + self._reserved > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= len(evicted.data)

    def _path(self, key: str) -> Path | None:
        return self.directory / f"{key}.kv" if self.directory is not None else None

    def _read(self, key: str) -> PrefixState | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        with path.open("rb") as file:
            magic, digits, blank = file.readline(), file.readline().strip(), file.readline()
            data = bytearray(file.read())
        if magic != _MAGIC or not digits.isdigit() or blank != b"\n":
            path.unlink(missing_ok=True)  # a damaged entry is dropped, never used
            return None
        return PrefixState(int(digits), data)

    def _write(self, key: str, state: PrefixState) -> None:
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".kv-")
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(_MAGIC + str(state.n_past).encode() + b"\n\n")
                temp.write(state.data)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
