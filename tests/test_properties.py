"""Property tests for the Runware caption request: any JSON value in any field gives an answer or a proper error.

A valid request (current or legacy shape) gets one to three fields replaced by arbitrary JSON values:
null, booleans, integers of any size, floats including huge ones and the NaN/Infinity that Python's
``json`` accepts, strings (empty, unicode, very long), lists and objects. Either the request is
answered, or it fails with a ``LlavaEdgeError`` whose Runware error item has a camelCase code of the
invalid*/missing*/unsupported*/max* families and names one of the broken fields as its parameter.
Nothing else may escape, and no example may take long (the deadlines stand for "never hangs").
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from llava_edge import Captioner, GenerationOptions
from llava_edge.errors import ContextOverflowError, InvalidRequestError, LlavaEdgeError
from llava_edge.generation import RuntimeOptions
from llava_edge.image_store import ImageStore
from llava_edge.images import ImageLimits
from llava_edge.models.catalog import ModelFiles
from llava_edge.outbound import TransferLimits
from llava_edge.schema import CaptionRequest, parse_caption_request

ERROR_CODE = re.compile(r"^(invalid|missing|unsupported|max)[A-Z][A-Za-z]*$")
IMAGE_FIELDS = ("inputs", "inputs.image", "inputImage", "inputImages")
KNOWN_FIELDS = (
    "taskType", "taskUUID", "model", "prompt", "template", "deliveryMethod", "webhookURL", "uploadEndpoint",
    "includeCost", "outputType", "outputFormat", "outputQuality", "ttl", "routing", "detail", "imageTokens",
    "tokenSelection", "maxTokens", "temperature", "topP", "seed", *IMAGE_FIELDS,
)
PROMPT_FIELDS = ("prompt", "template")


def _png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 80, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


IMAGE = _png_data_uri()

# --- strategies ----------------------------------------------------------------------------------------

_long_strings = st.builds(
    lambda piece, count: piece * count, st.text(min_size=1, max_size=3), st.integers(1000, 40_000)
)
_url_like = st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from(["http://", "HTTPS://", "http://[", "https://127.0.0.1:", "file://", "ftp://", "data:",
                     "data:image/png;base64,", "data:text/html,", "../", "/etc/"]),
    st.text(max_size=20),
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**600), max_value=10**600)  # json.loads makes ints of any size
    | st.floats()  # includes NaN, +-Infinity and 1e308: json.loads accepts them all
    | st.text(max_size=30)
    | st.text(st.characters(codec=None, categories=["Cs", "Cc", "Zs", "So"]), max_size=8)  # lone surrogates too
    | _url_like
    | _long_strings
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
_any_prompt = st.text(max_size=200) | st.lists(st.text(max_size=20), max_size=3)
VALID_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "taskType": st.sampled_from(["caption", "imageCaption"]),
    "model": st.sampled_from(["runware:150@2", "Q4_K_M", "q4", " RUNWARE:150@2 "]),
    "prompt": _any_prompt,
    "template": _any_prompt,
    "deliveryMethod": st.sampled_from(["sync", "async"]),
    "webhookURL": st.just("https://example.invalid/hook"),
    "uploadEndpoint": st.just("http://127.0.0.1:9/put"),
    "includeCost": st.booleans(),
    "outputType": st.sampled_from(["URL", "base64Data", "dataURI"]),
    "outputFormat": st.sampled_from(["JPG", "png", "Webp"]),
    "outputQuality": st.integers(20, 99),
    "ttl": st.integers(60, 2**40),
    "routing": json_values,
    "detail": st.sampled_from(["auto", "low", "high"]),
    "imageTokens": st.integers(1, 5000),
    "tokenSelection": st.sampled_from(["diverse", "pooled", "uniform"]),
    "maxTokens": st.integers(1, 4096),
    "temperature": st.floats(0, 2),
    "topP": st.floats(0, 1, exclude_min=True),
    "seed": st.integers(0, 2**32 - 1),
    "inputs": st.just({"image": IMAGE}),
    "inputs.image": st.sampled_from([IMAGE, IMAGE.split(",", 1)[1], f"  {IMAGE}\n"]),
    "inputImage": st.just(IMAGE),
    "inputImages": st.just([IMAGE]),
}
"""For each known field, values that are valid on their own: half of the replacements draw from these, so many
requests are answered and the answer path is exercised too."""
_unknown_fields = st.text(min_size=1, max_size=12).filter(lambda name: name not in KNOWN_FIELDS and "." not in name)
fields = st.sampled_from([*KNOWN_FIELDS, ""]).flatmap(lambda name: st.just(name) if name else _unknown_fields)
"""A known field 22 times out of 23, else an unknown one."""


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    """A valid request of either shape with one to three fields replaced; returns it and the broken fields."""
    task_uuid = str(draw(st.uuids(version=4)))
    if draw(st.booleans()):
        request: dict[str, Any] = {"taskType": "caption", "taskUUID": task_uuid, "model": "runware:150@2",
                                   "inputs": {"image": IMAGE}}
    else:
        request = {"taskType": "imageCaption", "taskUUID": task_uuid, "model": "runware:150@2", "inputImage": IMAGE}
    broken = draw(st.lists(fields, min_size=1, max_size=3, unique=True))
    for field in broken:
        value = draw(json_values | VALID_VALUES.get(field, json_values))
        if field == "inputs.image":
            inputs = request.get("inputs")
            request["inputs"] = {**inputs, "image": value} if isinstance(inputs, dict) else {"image": value}
        else:
            request[field] = value
    return request, broken


def expected_parameters(broken: list[str]) -> set[str]:
    """The parameters an error may name: the broken fields; a broken image field may be reported on any image field
    (e.g. inputImage added to a current-shape request conflicts with inputs.image)."""
    names = set(broken)
    if names & set(IMAGE_FIELDS):
        names |= set(IMAGE_FIELDS)
    return names


def check_error(error: LlavaEdgeError, request: dict[str, Any], broken: list[str]) -> None:
    item = error.error_item
    event(f"error {item['code']}")
    assert ERROR_CODE.match(item["code"]), item
    parameter = item.get("parameter")
    nested_in_inputs = "inputs" in broken and str(parameter).startswith("inputs.")  # e.g. an unknown inputs.mask
    assert parameter in expected_parameters(broken) or nested_in_inputs, (item, broken)
    assert isinstance(item["message"], str) and 0 < len(item["message"]) < 1000  # never echoes a huge input
    if "taskUUID" not in broken:  # the task's identity survives any other broken field
        assert item["taskUUID"] == request["taskUUID"], item


def case(field: str, value: Any) -> tuple[dict[str, Any], list[str]]:
    """A current-shape request with one field replaced: an explicit example for the properties."""
    request: dict[str, Any] = {"taskType": "caption", "taskUUID": "0b4e8a6c-2a47-4a53-9d2e-7f1f5c1e9a10",
                               "model": "runware:150@2", "inputs": {"image": IMAGE}}
    if field == "inputs.image":
        request["inputs"] = {"image": value}
    else:
        request[field] = value
    return request, [field]


# Each of these once escaped as a bare ValueError, OverflowError or UnicodeEncodeError, or echoed 40 kB back.
REGRESSIONS = [
    case("webhookURL", "http://[::1"),
    case("uploadEndpoint", "https://[/x"),
    case("temperature", 10**400),
    case("topP", -(10**400)),
    case("prompt", "describe \ud800 this"),
    case("template", ["a", "\udfff"]),
    case("inputs.image", "http://[::1/cat.png"),
    case("inputs.image", "https://127.0.0.1:abc/cat.png"),
    case("detail", "x" * 40_000),
    case("x" * 5000, 1),
]


def with_regressions(test: Any) -> Any:
    for regression in REGRESSIONS:
        test = example(regression)(test)
    return test


# --- parse_caption_request ---------------------------------------------------------------------------

_fast = settings(max_examples=300, deadline=timedelta(seconds=2), database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_fast
@given(requests())
@with_regressions
def test_any_field_value_is_parsed_or_refused_with_its_parameter(case: tuple[dict[str, Any], list[str]]) -> None:
    request, broken = case
    try:
        task = parse_caption_request(request)
    except InvalidRequestError as error:
        check_error(error, request, broken)
        return
    assert isinstance(task, CaptionRequest)
    assert task.task_uuid == request["taskUUID"] and isinstance(task.image, str) and task.image
    assert isinstance(task.prompt, str) and task.prompt.strip()


@_fast
@given(json_values)
def test_any_json_value_as_the_whole_task_is_refused(payload: Any) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_caption_request(payload)
    item = caught.value.error_item
    assert ERROR_CODE.match(item["code"]) and item["parameter"] in ("task", "taskType")


# --- Captioner.run_task on the tiny model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def small_captioner(tiny_files: ModelFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Captioner]:
    """The tiny model with n_ctx 768, so a valid maxTokens means at most ~180 tokens of work, and with no
    network host allowed: a generated URL can never reach out."""
    with Captioner(
        model_path=tiny_files.model_path,
        mmproj_path=tiny_files.mmproj_path,
        runtime=RuntimeOptions(n_ctx=768, threads=1, threads_batch=1),
        generation=GenerationOptions(max_tokens=4, seed=1),
        image_limits=ImageLimits(transfer=TransferLimits(allowed_hosts=frozenset(), timeout=2, deadline=2)),
        image_store=ImageStore(tmp_path_factory.mktemp("store")),
    ) as loaded:
        yield loaded


@settings(max_examples=60, deadline=timedelta(seconds=15), database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(requests())
@with_regressions
def test_run_task_answers_or_refuses_any_request(
    small_captioner: Captioner, case: tuple[dict[str, Any], list[str]]
) -> None:
    request, broken = case
    try:
        response = small_captioner.run_task(request)
    except ContextOverflowError as error:
        # A prompt of many tokens (3,000 emoji are 12,000 byte tokens) overflows n_ctx, and the error names
        # maxTokens even when no maxTokens could make room: see test_overlong_prompt_is_blamed_on_the_prompt.
        prompt_overflow = bool(set(broken) & set(PROMPT_FIELDS))
        check_error(error, request, [*broken, "maxTokens"] if prompt_overflow else broken)
        return
    except LlavaEdgeError as error:
        check_error(error, request, broken)
        return
    event("answered")
    assert response["taskType"] == "imageCaption"
    assert response["taskUUID"] == request["taskUUID"]
    assert isinstance(response["text"], str)


def test_overlong_prompt_is_blamed_on_the_prompt(small_captioner: Captioner) -> None:
    request = {"taskType": "caption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2",
               "inputs": {"image": IMAGE}, "prompt": "\U0001f600" * 300, "maxTokens": 1}
    with pytest.raises(ContextOverflowError) as caught:
        small_captioner.run_task(request)
    assert caught.value.error_item["parameter"] == "prompt"


def test_the_base_requests_are_answered(small_captioner: Captioner, tmp_path: Path) -> None:
    """The unbroken bases really caption, so the properties above test broken fields, not a broken base."""
    for request in (
        {"taskType": "caption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2", "inputs": {"image": IMAGE}},
        {"taskType": "imageCaption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2", "inputImage": IMAGE},
    ):
        response = small_captioner.run_task(request)
        assert response["taskUUID"] == request["taskUUID"] and response["text"]
