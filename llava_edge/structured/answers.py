"""A caption's events under a structure: its last event becomes the checked answer, and a schema whose answer
changes once complete (``uniqueItems``) holds its text back until then.

Without ``uniqueItems`` the text deltas pass as they come. With it, each delta is passed on empty (its token
count still reports progress) and the answer's final text, duplicates removed, follows in one delta before the
end, so the deltas still join to exactly the final text.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

from llava_edge.events import Progress, TextDelta
from llava_edge.generation import Generation, Timings
from llava_edge.structured.output import StructuredOutput


@dataclass(frozen=True)
class FinishedAnswer:
    """The last event of ``answer_events``: the answer's final text, value and timings."""

    text: str
    finish_reason: str
    timings: Timings
    data: Any = None
    """The checked JSON value under a schema; ``None`` for free text, a raw grammar or an incomplete answer."""


def answer_events(
    events: Iterable[Progress | TextDelta | Generation], structure: StructuredOutput | None
) -> Generator[Progress | TextDelta | FinishedAnswer, None, None]:
    """``events`` (a runtime caption stream) with its ``Generation`` made a ``FinishedAnswer`` under
    ``structure``; text held back as the module docstring says.

    Raises:
        StructuredOutputError: a complete answer that does not follow the schema.
    """
    hold = structure is not None and structure.deduplicates
    for event in events:
        if isinstance(event, Generation):
            yield from _finished(event, structure, hold)
            return
        if hold and isinstance(event, TextDelta):
            yield TextDelta("", event.generated_tokens)
        else:
            yield event


def _finished(generation: Generation, structure: StructuredOutput | None,
              held: bool) -> Generator[TextDelta | FinishedAnswer, None, None]:
    if structure is None:
        yield FinishedAnswer(generation.text, generation.finish_reason, generation.timings)
        return
    answer = structure.finish(generation.text, generation.finish_reason)
    if held and answer.text:
        yield TextDelta(answer.text, generation.timings.generated_tokens)
    yield FinishedAnswer(answer.text, answer.finish_reason, generation.timings, answer.data)
