"""What a running caption reports: the progress of its stages, then its text as it is generated. Pure.

A caption runs in three stages. CLIP encodes the image one tile at a time (``"encode"``: LLaVA-1.6's
anyres grid is one overview and up to four 336 px tiles, each its own libmtmd chunk of 576 tokens); the
prompt, image embeddings and text, is evaluated into the context batch by batch (``"prefill"``); then
tokens are sampled one by one, each reported as a ``TextDelta``. Encode and prefill interleave: a tile is
prefilled before the next one is encoded. ``TextStream`` turns token bytes into deltas that never split a
character and join to exactly the final text; ``StageView`` sums the events up in one short line.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

ENCODE = "encode"
"""Stage: CLIP encodes image tiles (``done``/``total`` count tiles)."""
PREFILL = "prefill"
"""Stage: image embeddings and prompt text are evaluated into the context (``done``/``total`` count tokens)."""
LOAD = "load"
"""Stage: a server swaps another model in before the caption (``done``/``total``: 0/1, then 1/1)."""


@dataclass(frozen=True)
class Progress:
    """How far one stage of a caption has come."""

    stage: str
    """``ENCODE`` (tiles), ``PREFILL`` (prompt tokens) or ``LOAD`` (a model swapped in)."""
    done: int
    total: int
    elapsed_s: float
    """Seconds this stage has computed so far in this call."""
    eta_s: float | None
    """Seconds this stage still needs at the rate measured so far; ``None`` before anything was measured."""

    @classmethod
    def measured(cls, stage: str, done: int, total: int, elapsed_s: float) -> Progress:
        """A progress event whose ETA comes from the rate measured so far."""
        eta = elapsed_s / done * (total - done) if done > 0 else None
        return cls(stage, done, total, elapsed_s, eta)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 1.0


@dataclass(frozen=True)
class TextDelta:
    """New text of the answer. The deltas of a caption joined are exactly its final text."""

    text: str
    """May be empty: a character split across tokens, trailing whitespace, or what could be the start of a
    stop string is held back until it is settled."""
    generated_tokens: int
    """Tokens sampled so far."""


class TextStream:
    """Turns generated token bytes into text deltas.

    A delta never ends inside a UTF-8 character; leading and trailing whitespace and anything that may
    begin a stop string are held back, because the final text is stripped and cut at the first stop
    string. ``finish(final_text)`` returns what is left, so the deltas always join to the final text.
    """

    def __init__(self, stop: tuple[str, ...] = ()):
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stop = tuple(word for word in stop if word)
        self._text = ""
        self._start: int | None = None
        """Index of the first character that is not whitespace, once there is one."""
        self._sent = 0
        """End of what was emitted: ``_text[_start:_sent]``."""

    @property
    def emitted(self) -> str:
        return self._text[self._start:self._sent] if self._start is not None else ""

    def feed(self, piece: bytes) -> str:
        """The new text that is settled once ``piece`` (one token's bytes) is added; may be ""."""
        self._text += self._decoder.decode(piece)
        end = self._settled_end()
        if self._start is None:
            head = self._text[:end]
            if not head.strip():
                return ""
            self._start = self._sent = len(head) - len(head.lstrip())
        if end <= self._sent:
            return ""
        delta, self._sent = self._text[self._sent:end], end
        return delta

    def finish(self, final_text: str) -> str:
        """The last delta: the rest of ``final_text``, which must begin with what was emitted."""
        emitted = self.emitted
        if not final_text.startswith(emitted):
            raise AssertionError(f"streamed text {emitted!r} is not a prefix of the final text {final_text!r}")
        return final_text[len(emitted):]

    def _settled_end(self) -> int:
        """How much of the text can no longer change: before any stop string (or any that may still
        complete), without trailing whitespace."""
        text = self._text
        found = [position for word in self._stop if (position := text.find(word, self._sent)) >= 0]
        pending = max((_partial_stop(text, word) for word in self._stop), default=0)
        end = min(found) if found else len(text) - pending
        return len(text[:end].rstrip())


def _partial_stop(text: str, word: str) -> int:
    """Length of the longest end of ``text`` that begins ``word`` (without being all of it)."""
    for size in range(min(len(word) - 1, len(text)), 0, -1):
        if text.endswith(word[:size]):
            return size
    return 0


class StageView:
    """The latest state of a running caption, summed up in one short line for a terminal."""

    def __init__(self) -> None:
        self.encode: Progress | None = None
        self.prefill: Progress | None = None
        self.generated_tokens = 0

    def update(self, event: Progress | TextDelta) -> None:
        if isinstance(event, TextDelta):
            self.generated_tokens = event.generated_tokens
        elif event.stage == ENCODE:
            self.encode = event
        else:
            self.prefill = event

    @property
    def eta_s(self) -> float | None:
        """Seconds until the first token: what encode and prefill still need at their measured rates."""
        parts = [self._remaining(self.encode), self._remaining(self.prefill)]
        return None if None in parts else sum(part for part in parts if part is not None)

    def line(self, *, bar_width: int = 0) -> str:
        """``CLIP 2/5 tiles · prefill [####......] 1,152/2,890 tokens · ETA 0:42``, or
        ``generating · 17 tokens`` once tokens come."""
        if self.generated_tokens:
            return f"generating · {self.generated_tokens} token{'' if self.generated_tokens == 1 else 's'}"
        parts = []
        if self.encode is not None and self.encode.total:
            parts.append(f"CLIP {self.encode.done}/{self.encode.total} tiles")
        if self.prefill is not None:
            bar = f"[{progress_bar(self.prefill.fraction, bar_width)}] " if bar_width > 0 else ""
            parts.append(f"prefill {bar}{self.prefill.done:,}/{self.prefill.total:,} tokens")
        eta = self.eta_s
        if eta is not None and parts:
            parts.append(f"ETA {format_seconds(eta)}")
        return " · ".join(parts) or "starting"

    @staticmethod
    def _remaining(progress: Progress | None) -> float | None:
        if progress is None or progress.done >= progress.total:
            return 0.0
        return progress.eta_s


def progress_bar(fraction: float, width: int) -> str:
    """A bar of ``width`` characters, ``#`` for the part done."""
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "#" * filled + "." * (width - filled)


def format_seconds(seconds: float) -> str:
    """``42`` -> ``0:42``; ``3725`` -> ``1:02:05``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
