"""The terminal side of a single caption: a live line on stderr while CLIP encodes the tiles and the prompt
is evaluated (``CLIP 3/5 tiles · prefill [####....] 1,152/2,890 tokens · ETA 0:42``), then the caption
streamed to stdout as it is generated. Each stream is only written live when it is a terminal; what is not
a terminal gets exactly what it got before (the caption and a newline, at the end)."""

from __future__ import annotations

import os
import time
from typing import Any, TextIO

from llava_edge.events import Progress, StageView, TextDelta

CLEAR_LINE = "\r\x1b[K"


class LiveCaption:
    """Shows the events of one caption (``on_event`` of ``caption_many``) on a terminal."""

    def __init__(self, out: TextIO, err: TextIO, *, per_second: float = 10.0):
        self.out, self.err = out, err
        self.stream_text = is_terminal(out)
        self.show_line = is_terminal(err)
        self.streamed = ""
        """The caption text written to ``out`` so far."""
        self._view = StageView()
        self._interval = 1.0 / per_second
        self._shown_at: float | None = None
        self._line_on = False

    def event(self, image: str, event: Progress | TextDelta) -> None:
        self._view.update(event)
        if isinstance(event, TextDelta) and self.stream_text:
            if event.text:
                self.clear_line()
                self.out.write(event.text)
                self.out.flush()
                self.streamed += event.text
            return
        if self.show_line and not self.streamed:
            now = time.monotonic()
            if self._shown_at is None or now - self._shown_at >= self._interval:
                self._shown_at = now
                self._draw()

    def clear_line(self) -> None:
        if self._line_on:
            self.err.write(CLEAR_LINE)
            self.err.flush()
            self._line_on = False

    def end(self) -> None:
        """Leave the terminal tidy: no live line, and a caption cut short ends its line."""
        self.clear_line()
        if self.streamed:
            self.out.write("\n")
            self.out.flush()
            self.streamed = ""

    def _draw(self) -> None:
        width = _columns(self.err)
        line = self._view.line(bar_width=max(10, min(30, width // 5)))
        self.err.write(f"\r{line[:width - 1]}\x1b[K")
        self.err.flush()
        self._line_on = True


class LiveSink:
    """Wraps the console sink of a single caption: a caption already streamed to the terminal gets only its
    line end; anything else (an error, or a caption not streamed) goes to the wrapped sink as before."""

    def __init__(self, live: LiveCaption, sink: Any):
        self.live, self.sink = live, sink

    def done(self, image: str, digest: Any) -> bool:
        return bool(self.sink.done(image, digest))

    def write(self, record: Any) -> None:
        text = record.text if record.ok else None
        if self.live.streamed and text is not None and text.startswith(self.live.streamed):
            self.live.out.write(text[len(self.live.streamed):] + "\n")
            self.live.out.flush()
            self.live.streamed = ""
            return
        self.live.end()
        self.sink.write(record)


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80
