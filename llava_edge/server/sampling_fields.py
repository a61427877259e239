"""Generation options as the chat APIs send them (OpenAI and Responses body fields, Ollama ``options``),
checked and turned into ``GenerationOptions``.

Every sampler llama.cpp's chain offers is honoured under each API's own names. A value of the wrong type or
out of range is a 400 that names the field; ``None`` means "the server's default", as the APIs define it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from llava_edge.errors import InvalidRequestError
from llava_edge.generation import UNTIL_CONTEXT_FULL, GenerationOptions
from llava_edge.schema import MAX_TOKENS_LIMIT

MAX_STOP_CHARS = 256
"""Characters one stop string may have: every generated token is checked against the text's tail of this
length, so the cost per token stays bounded whatever a client sends."""


@dataclass(frozen=True)
class Sampler:
    """How one request field sets one ``GenerationOptions`` field."""

    option: str
    """The ``GenerationOptions`` field."""
    low: float
    high: float
    integer: bool = False


_COMMON: dict[str, Sampler] = {
    "temperature": Sampler("temperature", 0, 2),
    "top_p": Sampler("top_p", 0, 1),
    "top_k": Sampler("top_k", 0, 1000, integer=True),
    "min_p": Sampler("min_p", 0, 1),
    "typical_p": Sampler("typical_p", 0, 1),
    "repeat_penalty": Sampler("repeat_penalty", 0, 10),
    "repeat_last_n": Sampler("repeat_last_n", -1, 1_000_000, integer=True),
    "presence_penalty": Sampler("presence_penalty", -2, 2),
    "frequency_penalty": Sampler("frequency_penalty", -2, 2),
    "seed": Sampler("seed", -1, 2**32 - 1, integer=True),
}
_MAX_TOKENS = Sampler("max_tokens", 1, MAX_TOKENS_LIMIT, integer=True)
OPENAI_SAMPLERS: dict[str, Sampler] = {**_COMMON, "max_tokens": _MAX_TOKENS, "max_completion_tokens": _MAX_TOKENS}
"""OpenAI Chat Completions fields (``top_k``, ``min_p``, ``typical_p``, ``repeat_penalty`` and
``repeat_last_n`` are the extensions llama.cpp's server also takes)."""
RESPONSES_SAMPLERS: dict[str, Sampler] = {**_COMMON, "max_output_tokens": _MAX_TOKENS}
OLLAMA_SAMPLERS: dict[str, Sampler] = {**_COMMON, "num_predict": Sampler("max_tokens", -2, MAX_TOKENS_LIMIT,
                                                                        integer=True)}
"""Ollama ``options`` keys; ``num_predict`` -1 and -2 mean "until the context is full"."""


def generation_options(fields: Mapping[str, Any], samplers: Mapping[str, Sampler], defaults: GenerationOptions,
                       *, prefix: str = "", stop_limit: int = 4) -> GenerationOptions:
    """``defaults`` changed by the request's sampler ``fields`` (and ``stop``); ``prefix`` names where the
    fields sit in the request (``options.``) for messages.

    Raises:
        InvalidRequestError: a value of the wrong type or out of range.
    """
    changes: dict[str, Any] = {}
    for name, sampler in samplers.items():
        value = fields.get(name)
        if value is not None:
            changes[sampler.option] = _sampler_value(name, value, sampler, prefix)
    if fields.get("stop") is not None:
        changes["stop"] = parse_stop(fields["stop"], limit=stop_limit, label=f"{prefix}stop")
    return replace(defaults, **changes)


def _sampler_value(name: str, value: object, sampler: Sampler, prefix: str) -> Any:
    number = parse_number(value, name, sampler.low, sampler.high, integer=sampler.integer, label=prefix + name)
    if sampler.option == "seed" and number == -1:
        return None  # -1: a fresh random seed, as llama.cpp and Ollama read it
    if sampler.option == "max_tokens" and number < 1:
        return UNTIL_CONTEXT_FULL
    return number


def parse_stop(value: object, *, limit: int, label: str = "stop") -> tuple[str, ...]:
    """Stop strings given as one string or a list of at most ``limit`` non-empty strings of at most
    ``MAX_STOP_CHARS`` characters.

    Raises:
        InvalidRequestError: anything else.
    """
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or len(stops) > limit or not all(
            isinstance(stop, str) and 0 < len(stop) <= MAX_STOP_CHARS for stop in stops):
        raise InvalidRequestError(f"{label} must be a string or up to {limit} strings of 1 to {MAX_STOP_CHARS} "
                                  "characters.", code="invalidStop", parameter=label.rsplit(".", 1)[-1])
    return tuple(stops)


def parse_number(value: object, name: str, low: float, high: float, *, integer: bool,
                 label: str | None = None) -> Any:
    """A number (an integer when ``integer``) from ``low`` to ``high``; ``label`` names it in the message.

    Raises:
        InvalidRequestError: of another type or out of range (``parameter`` is ``name``).
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise InvalidRequestError(f"{label or name} must be {kind} from {low} to {high}.", code="invalid_value",
                                  parameter=name)
    return value
