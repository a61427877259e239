"""Conversations as the OpenAI, Responses and Ollama APIs send them, turned into what the model reads: the
images, and the prompt text after each image in the model's template.

Chat clients resend the whole history each turn, images included. The first image always opens the prompt
(``[INST] <image>\\n...``), so every turn about the same image shares the evaluated image prefix, which the
runtime keeps: a follow-up question does not encode the image again. Earlier turns follow as text in
Mistral's instruction format; a system message opens the first user turn (Mistral has no system role). A
conversation with no image is answered as text; its follow-ups reuse the evaluated tokens they share.

The prompt is built in one pass (each piece appended to a list, joined once), so its cost is linear in the
conversation; ``MAX_MESSAGES`` bounds the work a request can ask for before anything is tokenized.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llava_edge.errors import ContextOverflowError, InvalidRequestError

MAX_CONVERSATION_IMAGES = 8
"""Different images one conversation may show: each takes 576 to 2,880 tokens of the context, so more
cannot fit the default n_ctx anyway; the bound stops a request naming hundreds of URLs before any is read."""
MAX_MESSAGES = 1000
"""Messages one request may hold. A 4,096-token context holds far fewer turns; the bound keeps a request of
tens of thousands of tiny messages from costing more than it could ever use."""
MAX_CHARS_PER_TOKEN = 32
"""A prompt longer than the context's tokens times this many characters cannot fit (this vocabulary's tokens
are far shorter): it is refused before it is tokenized, which would hold the model for seconds."""
CONTROL_TEXTS = ("<s>", "</s>", "<unk>")
"""The text of the vocabulary's control tokens: removed from what clients write, so only the prompt's own turn
separators become control tokens."""
ROLES = ("system", "user", "assistant", "tool")
"""Roles the prompt knows; ``developer`` is read as ``system``, ``function`` as ``tool``."""


@dataclass(frozen=True)
class Turn:
    """One message: ``role`` is one of ``ROLES``; ``images`` are data URIs, URLs or base64 text. The text is
    kept without control-token text (``CONTROL_TEXTS``)."""

    role: str
    text: str
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", without_control_text(self.text))


def without_control_text(text: str) -> str:
    """``text`` with every control token's text removed (repeatedly, so no removal joins a new one)."""
    while any(control in text for control in CONTROL_TEXTS):
        for control in CONTROL_TEXTS:
            text = text.replace(control, "")
    return text


def quoted(text: object, limit: int = 80) -> str:
    """Client text as an error message or log line quotes it: JSON-escaped, at most ``limit`` characters."""
    value = text if isinstance(text, str) else json.dumps(text, default=str)
    return json.dumps(value[:limit])


def role_of(value: object) -> str:
    """A message's ``role`` as the conversation checks it: a string as given, any other JSON value as its JSON
    text (``null``, ``{"a": 1}``), so the message refusing it never shows a Python repr."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def check_message_count(count: int) -> None:
    """Refuse more than ``MAX_MESSAGES`` messages, before any is read.

    Raises:
        InvalidRequestError: with the count and the bound.
    """
    if count > MAX_MESSAGES:
        raise InvalidRequestError(
            f"The conversation has {count} messages; at most {MAX_MESSAGES} are read. Send only the recent ones.",
            code="tooManyMessages", parameter="messages",
        )


def conversation_images(turns: list[Turn]) -> tuple[str, ...]:
    """The different images of a conversation, in the order they first appear (chat clients resend each
    image with the history: a resent image counts once). A conversation may have none.

    Raises:
        InvalidRequestError: more than ``MAX_CONVERSATION_IMAGES``.
    """
    images = tuple(dict.fromkeys(image for turn in turns for image in turn.images))
    if len(images) > MAX_CONVERSATION_IMAGES:
        raise InvalidRequestError(
            f"The conversation holds {len(images)} different images; at most {MAX_CONVERSATION_IMAGES} fit one "
            "context. Start a new conversation for the next images.",
            code="tooManyImages", parameter="messages",
        )
    return images


def conversation_prompt(turns: list[Turn]) -> tuple[str, ...]:
    """The text after each image of ``conversation_images`` (one text when there is no image): earlier turns
    in Mistral's format, ending with the last user message (the template closes it with ``[/INST]``). The
    first image opens the prompt (the template puts it there); a later image goes at the start of the user
    turn that first shows it, so text ``i`` is everything between image ``i`` and the next one. A tool's
    answer is read as part of the user's side of the conversation.

    Raises:
        InvalidRequestError: no user message last, or an unknown role.
    """
    check_message_count(len(turns))
    system = "\n".join(turn.text for turn in turns if turn.role == "system" and turn.text)
    dialogue = [turn for turn in turns if turn.role != "system"]
    for turn in dialogue:
        if turn.role not in ROLES:
            raise InvalidRequestError(f"Unknown message role {quoted(turn.role, 40)}; use system, user, assistant "
                                      "or tool.", code="invalidRole", parameter="messages")
    if not dialogue or dialogue[-1].role == "assistant":
        raise InvalidRequestError("The last message must be the user's question.", code="invalidMessages",
                                  parameter="messages")
    return _render(system, dialogue, set(conversation_images(turns)[:1]))


def bounded_prompt(turns: list[Turn], n_ctx: int) -> tuple[str, ...]:
    """``conversation_prompt``, refused when its text is too long to fit ``n_ctx`` tokens whatever they are.

    Raises:
        ContextOverflowError: with the numbers. InvalidRequestError: as ``conversation_prompt``.
    """
    texts = conversation_prompt(turns)
    size, limit = sum(len(text) for text in texts), n_ctx * MAX_CHARS_PER_TOKEN
    if size > limit:
        raise ContextOverflowError(f"The conversation's text is {size:,} characters; a {n_ctx}-token context holds "
                                   f"at most about {limit:,}. Send a shorter conversation.", parameter="messages")
    return texts


def _render(system: str, dialogue: list[Turn], seen: set[str]) -> tuple[str, ...]:
    texts: list[list[str]] = [[f"{system}\n\n" if system else ""]]
    user_open = True  # the template opens the first user turn
    for turn in dialogue:
        if turn.role == "assistant":
            texts[-1].append(f" [/INST] {turn.text.strip()}</s>")
            user_open = False
            continue
        if not user_open:
            texts[-1].append("[INST] ")
            user_open = True
        elif len(texts[-1]) > 1:
            texts[-1].append("\n\n")  # a second user-side message in the same turn
        for image in turn.images:
            if image not in seen:
                seen.add(image)
                texts.append(["\n"])
        texts[-1].append(f"Tool result: {turn.text.strip()}" if turn.role == "tool" else turn.text.strip())
    return tuple("".join(parts) for parts in texts)
