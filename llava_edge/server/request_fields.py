"""Every request field of the chat APIs, decided: honoured, accepted as a hint, or refused.

A field is **refused** only when ignoring it would hand back an answer that means something else than
asked (``n`` > 1, a required tool call, log probabilities). **Hints** cannot change what an answer means
(``num_ctx``, ``num_thread``, ``user``...): they are accepted. Fields no table names are ignored and logged,
as Ollama itself only warns. docs/server.md has the same tables for users; a test keeps the two in step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from llava_edge.errors import InvalidRequestError
from llava_edge.server.conversation import quoted
from llava_edge.server.sampling_fields import OLLAMA_SAMPLERS, OPENAI_SAMPLERS, RESPONSES_SAMPLERS

_log = logging.getLogger("llava_edge.server.request_fields")
Refusal = Callable[[Any], str | None]
"""Given a field's value: why it is refused (a sentence for the client), or None when it is fine."""

NO_TOOL_CALLS = ("This model cannot call tools: it answers in text. Leave tool_choice out (or set it to auto or "
                 "none) and the answer comes as text.")


def _tool_choice(value: Any) -> str | None:
    return None if value in (None, "auto", "none") else NO_TOOL_CALLS


def _only(allowed: tuple[Any, ...], why: str) -> Refusal:
    return lambda value: None if value in allowed else why


def _falsy(why: str) -> Refusal:
    return lambda value: why if value else None


_LOGPROBS = "Log probabilities are not available from this server; leave logprobs and top_logprobs out."
_COMMON_OPENAI_HINTS = ("user", "metadata", "parallel_tool_calls", "service_tier", "store", "prompt_cache_key",
                        "safety_identifier", "reasoning_effort", "verbosity", "stream_options")

OPENAI_CHAT: dict[str, str | Refusal] = {
    **dict.fromkeys(("model", "messages", "stream", "response_format", "stop", "tools", "image_tokens",
                     "token_selection", "keep_alive", *OPENAI_SAMPLERS), "honoured"),
    **dict.fromkeys((*_COMMON_OPENAI_HINTS, "prediction", "functions", "modalities"), "hint"),
    "n": _only((None, 1), "n must be 1: this server answers with one choice."),
    "tool_choice": _tool_choice,
    "function_call": _tool_choice,
    "logprobs": _falsy(_LOGPROBS),
    "top_logprobs": _falsy(_LOGPROBS),
    "logit_bias": _falsy("logit_bias is not supported: its token ids belong to another tokenizer."),
    "audio": _only((None,), "This model answers in text only; leave audio out."),
    "web_search_options": _only((None,), "This server has no web search; leave web_search_options out."),
}
"""OpenAI Chat Completions (``POST /v1/chat/completions``)."""

RESPONSES: dict[str, str | Refusal] = {
    **dict.fromkeys(("model", "input", "instructions", "stream", "text", "tools", "store", "previous_response_id",
                     "image_tokens", "token_selection", "keep_alive", *RESPONSES_SAMPLERS), "honoured"),
    **dict.fromkeys((*_COMMON_OPENAI_HINTS, "reasoning", "truncation", "include", "max_tool_calls",
                     "stream_options"), "hint"),
    "tool_choice": _tool_choice,
    "top_logprobs": _falsy(_LOGPROBS),
    "background": _falsy("Background responses are not available; leave background out and wait for the answer "
                         "(or stream it)."),
    "prompt": _only((None,), "Stored prompt templates are not available here; send input and instructions."),
    "conversation": _only((None,), "Stored conversations are not available here; use previous_response_id."),
}
"""OpenAI Responses (``POST /v1/responses``)."""

OLLAMA: dict[str, str | Refusal] = {
    **dict.fromkeys(("model", "prompt", "messages", "images", "system", "stream", "format", "options", "tools",
                     "keep_alive"), "honoured"),
    "think": "hint",
    "suffix": _falsy("suffix (fill-in-the-middle) is not supported by this model; leave it out."),
    "template": _falsy("A custom template is not supported: the model's own template is always applied."),
    "raw": _falsy("raw prompts are not supported: the model's template is always applied."),
    "context": _falsy("context (the token list /api/generate once returned) is not supported; send the "
                      "conversation as messages to /api/chat."),
}
"""Ollama ``/api/generate`` and ``/api/chat``."""

OLLAMA_OPTIONS: dict[str, str | Refusal] = {
    **dict.fromkeys((*OLLAMA_SAMPLERS, "stop", "image_tokens", "token_selection"), "honoured"),
    **dict.fromkeys(("num_ctx", "num_keep", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap",
                     "use_mlock", "low_vram", "f16_kv", "vocab_only", "numa", "penalize_newline", "tfs_z",
                     "mirostat", "mirostat_tau", "mirostat_eta", "logits_all"), "hint"),
}
"""Ollama ``options`` keys (``num_ctx`` is checked against the loaded context by the Ollama routes)."""


def check_fields(body: Mapping[str, Any], table: Mapping[str, str | Refusal], *, where: str,
                 prefix: str = "") -> None:
    """Refuse the fields ``table`` refuses; log the ones it does not know (they are ignored). ``prefix`` is
    where the fields sit in the body (``options.``), for the error's ``parameter``.

    Raises:
        InvalidRequestError: the first refused field, with the reason (``unsupported_parameter``).
    """
    unknown = []
    for name, value in body.items():
        decision = table.get(name)
        if decision is None:
            unknown.append(name)
        elif callable(decision) and (reason := decision(value)) is not None:
            raise InvalidRequestError(reason, code="unsupported_parameter", parameter=f"{prefix}{name}")
    if unknown:
        _log.info("%s: ignored unknown fields %s", where, ", ".join(quoted(name, 40) for name in unknown[:20]))
