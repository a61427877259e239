"""The Runware caption task: request validation and the response item. Pure: no I/O.

Two request shapes are in use and both are accepted (``../shared/runware-protocol.md`` §4):

* current: ``{"taskType": "caption", "inputs": {"image": ...}, ...}`` (runware-sdk, current docs);
* legacy: ``{"taskType": "imageCaption", "inputImage": ...}`` or ``"inputImages": [...]`` (runware 0.5).

Every rule breaks with one ``InvalidRequestError`` whose Runware error item names the ``parameter``
and carries the request's ``taskType`` and ``taskUUID``. The answer is always
``{"taskType": "imageCaption", "taskUUID": ..., "text": ...[, "cost": ...]}``.

Besides the Runware fields, a few llava-edge extensions are accepted (Runware has no equivalent):
``detail`` ("auto" | "low" | "high"), ``imageTokens`` (an image token budget, with ``tokenSelection``:
"diverse" | "pooled" | "uniform"), ``maxTokens``, ``temperature``, ``topP``, ``seed``.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from llava_edge.errors import InvalidRequestError
from llava_edge.token_budget import SELECTIONS

CAPTION_TASK_TYPES = ("caption", "imageCaption")
RESPONSE_TASK_TYPE = "imageCaption"
DEFAULT_PROMPT = "Describe this image in detail."
MAX_PROMPT_CHARS = 3000
MAX_TOKENS_LIMIT = 4096
MAX_TTL_SECONDS = 7 * 24 * 3600
"""The longest a finished result may be kept for getResponse: a week."""
OUTPUT_TYPES = ("URL", "base64Data", "dataURI")
OUTPUT_FORMATS = ("JPG", "PNG", "WEBP")
DETAIL_LEVELS = ("auto", "low", "high")

_KNOWN_FIELDS = frozenset(
    {
        "taskType", "taskUUID", "model", "prompt", "template", "inputs", "inputImage", "inputImages",
        "deliveryMethod", "webhookURL", "uploadEndpoint", "includeCost", "outputType", "outputFormat",
        "outputQuality", "ttl", "routing", "detail", "imageTokens", "tokenSelection", "maxTokens", "temperature",
        "topP", "seed", "keepAlive",
    }
)


@dataclass(frozen=True)
class CaptionRequest:
    """A validated caption task. Attributes are snake_case; the wire names are camelCase."""

    task_type: str
    """As sent: "caption" or "imageCaption"."""
    task_uuid: str
    model: str
    image: str
    """The image reference: a URL, data URI, bare base64 or the UUID of a stored image."""
    prompt: str = DEFAULT_PROMPT
    delivery_method: str = "sync"
    webhook_url: str | None = None
    upload_endpoint: str | None = None
    include_cost: bool = False
    output_type: str = "URL"
    output_format: str = "JPG"
    output_quality: int = 95
    ttl: int | None = None
    detail: str = "auto"
    image_tokens: int | None = None
    """At most this many image tokens fed (``None``: all of them); see ``Captioner.stream``."""
    token_selection: str = "diverse"
    """How ``image_tokens`` picks its tokens: diverse, pooled or uniform."""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None


def caption_response(task_uuid: str, text: str, cost: float | None = None) -> dict[str, Any]:
    """The Runware response item for a finished caption; ``cost`` only when it was asked for."""
    item: dict[str, Any] = {"taskType": RESPONSE_TASK_TYPE, "taskUUID": task_uuid, "text": text}
    if cost is not None:
        item["cost"] = cost
    return item


def parse_caption_request(payload: Any) -> CaptionRequest:
    """Validate a Runware caption task (either shape) and return it as a ``CaptionRequest``.

    Raises:
        InvalidRequestError: a field is missing, unknown, of the wrong type or out of range.
    """
    if not isinstance(payload, dict):
        raise InvalidRequestError(
            f"A task must be a JSON object, got {type(payload).__name__}.", code="invalidTask", parameter="task"
        )
    fields = _Fields(payload)
    task_type = fields.task_type()
    fields.task_uuid()
    fields.reject_unknown()
    return CaptionRequest(
        task_type=task_type,
        task_uuid=fields.uuid,
        model=fields.required_string("model", "model"),
        image=fields.image(),
        prompt=fields.prompt(),
        delivery_method=fields.choice("deliveryMethod", ("sync", "async"), "sync"),
        webhook_url=fields.http_url("webhookURL"),
        upload_endpoint=fields.http_url("uploadEndpoint"),
        include_cost=fields.boolean("includeCost", False),
        output_type=fields.choice("outputType", OUTPUT_TYPES, "URL"),
        output_format=fields.choice("outputFormat", OUTPUT_FORMATS, "JPG", fold_case=True),
        output_quality=fields.integer("outputQuality", 20, 99, default=95),
        ttl=fields.integer("ttl", 60, MAX_TTL_SECONDS, default=None),
        detail=fields.choice("detail", DETAIL_LEVELS, "auto"),
        image_tokens=fields.integer("imageTokens", 1, None, default=None),
        token_selection=fields.choice("tokenSelection", SELECTIONS, "diverse"),
        max_tokens=fields.integer("maxTokens", 1, MAX_TOKENS_LIMIT, default=None),
        temperature=fields.number("temperature", 0.0, 2.0),
        top_p=fields.number("topP", 0.0, 1.0, exclusive_low=True),
        seed=fields.integer("seed", 0, 2**32 - 1, default=None),
    )


def is_uuid4(value: Any) -> bool:
    """True for a canonical (hyphenated, 36-character) version-4 UUID string."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == value.lower()  # uuid.UUID also takes hyphens anywhere


def task_identity(payload: Any) -> tuple[str | None, str | None]:
    """Best-effort ``(taskType, taskUUID)`` of a raw task, for error items of tasks that fail validation."""
    if not isinstance(payload, dict):
        return None, None
    task_type, task_uuid = payload.get("taskType"), payload.get("taskUUID")
    return (task_type if isinstance(task_type, str) else None, task_uuid if isinstance(task_uuid, str) else None)


def _capitalised(name: str) -> str:
    return name[0].upper() + name[1:]


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message never echoes a huge input back."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_utf8(text: str) -> bool:
    """False for strings with lone surrogates (``"\\ud800"`` is valid JSON, but no UTF-8 text can hold it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Fields:
    """Reads fields of one raw task; each failure raises with the task's identity attached."""

    def __init__(self, payload: dict[str, Any]):
        self.payload = payload
        self.task_type_value, self.uuid_value = task_identity(payload)

    @property
    def uuid(self) -> str:
        assert self.uuid_value is not None
        return self.uuid_value

    def fail(self, message: str, code: str, parameter: str) -> InvalidRequestError:
        return InvalidRequestError(
            message, code=code, parameter=parameter, task_type=self.task_type_value, task_uuid=self.uuid_value
        )

    def task_type(self) -> str:
        value = self.payload.get("taskType")
        if value is None:
            raise self.fail("taskType is required: use \"caption\".", "missingTaskType", "taskType")
        if value not in CAPTION_TASK_TYPES:
            raise self.fail(
                f"taskType must be \"caption\" (or the legacy \"imageCaption\"), got {_shown(value)}.",
                "invalidTaskType",
                "taskType",
            )
        return str(value)

    def task_uuid(self) -> None:
        value = self.payload.get("taskUUID")
        if value is None:
            raise self.fail("taskUUID is required: send a fresh UUID v4 per task.", "missingTaskUUID", "taskUUID")
        if not is_uuid4(value):
            self.uuid_value = None
            raise self.fail(
                f"taskUUID must be a UUID v4 string such as {uuid.uuid4()}, got {_shown(value)}.",
                "invalidTaskUUID",
                "taskUUID",
            )

    def reject_unknown(self) -> None:
        unknown = sorted(str(key) for key in self.payload if key not in _KNOWN_FIELDS)
        if unknown:
            raise self.fail(
                f"Unknown parameter {_shown(unknown[0])} for a caption task. Known parameters: "
                f"{', '.join(sorted(_KNOWN_FIELDS))}.",
                "unsupportedParameter",
                unknown[0],
            )

    def required_string(self, name: str, what: str) -> str:
        value = self.payload.get(name)
        if value is None:
            raise self.fail(f"{name} is required (for example \"runware:150@2\").",
                            f"missing{_capitalised(name)}", name)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{name} must be a non-empty string naming the {what}.",
                            f"invalid{_capitalised(name)}", name)
        return value

    def image(self) -> str:
        inputs = self.payload.get("inputs")
        legacy = [key for key in ("inputImage", "inputImages") if key in self.payload]
        if inputs is not None and not isinstance(inputs, dict):
            raise self.fail("inputs must be an object: {\"image\": ...}.", "invalidInputs", "inputs")
        unknown = sorted(str(key) for key in (inputs or {}) if key != "image")
        if unknown:
            raise self.fail(
                f"Unknown parameter inputs.{unknown[0][:80]}: a caption task's inputs hold only \"image\".",
                "unsupportedParameter",
                f"inputs.{unknown[0][:80]}",
            )
        if inputs is not None and "image" in inputs:
            if legacy:
                raise self.fail(
                    f"Give the image once: inputs.image or {legacy[0]}, not both.", "invalidInputs", "inputs.image"
                )
            return self._image_string(inputs["image"], "inputs.image")
        if len(legacy) == 2:
            raise self.fail("Give inputImage or inputImages, not both.", "invalidInputImage", "inputImages")
        if legacy == ["inputImage"]:
            return self._image_string(self.payload["inputImage"], "inputImage")
        if legacy == ["inputImages"]:
            return self._single_of_list(self.payload["inputImages"])
        raise self.fail(
            "inputs.image is required: a URL, data URI, base64 string or the UUID of an uploaded image.",
            "missingInputsImage",
            "inputs.image",
        )

    def _single_of_list(self, value: Any) -> str:
        if not isinstance(value, list) or not value:
            raise self.fail("inputImages must be a non-empty list of image strings.", "invalidInputImages",
                            "inputImages")
        if len(value) > 1:
            raise self.fail(
                f"inputImages holds {len(value)} images; LLaVA-1.6 captions one image per task. "
                "Send one task per image.",
                "unsupportedInputImages",
                "inputImages",
            )
        return self._image_string(value[0], "inputImages")

    def _image_string(self, value: Any, parameter: str) -> str:
        code = "invalidInputsImage" if parameter == "inputs.image" else f"invalid{_capitalised(parameter)}"
        if not isinstance(value, str) or not value.strip():
            raise self.fail(
                f"{parameter} must be a non-empty string: a URL, data URI, base64 or an image UUID.", code, parameter
            )
        return value.strip()

    def prompt(self) -> str:
        value = self.payload.get("prompt", self.payload.get("template"))
        parameter = "prompt" if "prompt" in self.payload else "template"
        if isinstance(value, list) and all(isinstance(part, str) for part in value):
            value = "\n".join(value)  # the legacy SDK types prompt as List[str]
        if value is None:
            return DEFAULT_PROMPT
        if not isinstance(value, str) or not _is_utf8(value):
            raise self.fail(f"{parameter} must be a string of UTF-8 text.", "invalidPrompt", parameter)
        if not value.strip():
            return DEFAULT_PROMPT
        if len(value) > MAX_PROMPT_CHARS:
            raise self.fail(
                f"{parameter} has {len(value)} characters; the limit is {MAX_PROMPT_CHARS}.", "invalidPrompt", parameter
            )
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str, *, fold_case: bool = False) -> str:
        value = self.payload.get(name, default)
        lookup = {option.lower() if fold_case else option: option for option in allowed}
        key = value.lower() if fold_case and isinstance(value, str) else value
        if not isinstance(key, str) or key not in lookup:
            raise self.fail(
                f"{name} must be one of {', '.join(allowed)}; got {_shown(value)}.", f"invalid{_capitalised(name)}",
                name,
            )
        return lookup[key]

    def http_url(self, name: str) -> str | None:
        value = self.payload.get(name)
        if value is None:
            return None
        try:
            parts = urlsplit(value) if isinstance(value, str) else None
        except ValueError:  # "http://[" and other malformed netlocs
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.fail(
                f"{name} must be an http(s) URL, got {_shown(value)}.", f"invalid{_capitalised(name)}", name
            )
        return str(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.payload.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(f"{name} must be true or false, got {_shown(value)}.", f"invalid{_capitalised(name)}", name)
        return value

    def integer(self, name: str, low: int, high: int | None, *, default: int | None) -> Any:
        value = self.payload.get(name, default)
        if value is None:
            return None
        in_range = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not in_range or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise self.fail(
                f"{name} must be an integer {bounds}, got {_shown(value)}.", f"invalid{_capitalised(name)}", name
            )
        return value

    def number(self, name: str, low: float, high: float, *, exclusive_low: bool = False) -> float | None:
        value = self.payload.get(name)
        if value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (isinstance(value, int) or math.isfinite(value))  # isfinite(10**400) would raise OverflowError
        ok = ok and (value > low if exclusive_low else value >= low) and value <= high
        if not ok:
            opener = "(" if exclusive_low else "["
            raise self.fail(
                f"{name} must be a number in {opener}{low}, {high}], got {_shown(value)}.",
                f"invalid{_capitalised(name)}",
                name,
            )
        return float(value)
