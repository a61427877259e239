"""Every rule of the Runware caption request, each broken once, and the accepted shapes."""

from __future__ import annotations

from typing import Any

import pytest

from llava_edge.errors import InvalidRequestError
from llava_edge.schema import DEFAULT_PROMPT, caption_response, parse_caption_request

UUID = "23c7f549-0b89-4f39-80bb-d0e68af66dc5"
IMAGE = "https://example.invalid/cat.png"


def current(**changes: Any) -> dict[str, Any]:
    task = {"taskType": "caption", "taskUUID": UUID, "model": "runware:150@2", "inputs": {"image": IMAGE}}
    task.update(changes)
    return {key: value for key, value in task.items() if value is not _DROP}


_DROP = object()


def test_current_shape_with_every_field() -> None:
    request = parse_caption_request(
        current(
            prompt="Describe it.", deliveryMethod="async", webhookURL="http://127.0.0.1:9/hook",
            uploadEndpoint="https://127.0.0.1/put", includeCost=True, outputType="dataURI", outputFormat="webp",
            outputQuality=20, ttl=60, routing={"provider": "x"}, detail="low", maxTokens=12, temperature=0,
            topP=1, seed=3, imageTokens=640, tokenSelection="pooled",
        )
    )
    assert (request.image_tokens, request.token_selection) == (640, "pooled")
    assert (request.task_type, request.task_uuid, request.image, request.prompt) == (
        "caption", UUID, IMAGE, "Describe it."
    )
    assert request.delivery_method == "async" and request.include_cost is True
    assert request.output_format == "WEBP" and request.output_quality == 20 and request.ttl == 60
    assert (request.detail, request.max_tokens, request.temperature, request.top_p, request.seed) == (
        "low", 12, 0.0, 1.0, 3
    )


def test_legacy_shape_with_prompt_list_and_single_image_list() -> None:
    request = parse_caption_request(
        {"taskType": "imageCaption", "taskUUID": UUID, "model": "runware:150@2", "inputImages": [IMAGE],
         "prompt": ["Line one.", "Line two."]}
    )
    assert request.task_type == "imageCaption" and request.image == IMAGE
    assert request.prompt == "Line one.\nLine two."


def test_defaults() -> None:
    request = parse_caption_request(current())
    assert request.prompt == DEFAULT_PROMPT
    assert (request.delivery_method, request.include_cost, request.output_type, request.output_format) == (
        "sync", False, "URL", "JPG")
    assert request.output_quality == 95 and request.ttl is None and request.detail == "auto"
    assert request.image_tokens is None and request.token_selection == "diverse"


def test_blank_prompt_means_default_prompt() -> None:
    assert parse_caption_request(current(prompt="   ")).prompt == DEFAULT_PROMPT


BROKEN = [
    ("taskType", current(taskType=_DROP), "missingTaskType"),
    ("taskType", current(taskType="imageInference"), "invalidTaskType"),
    ("taskUUID", current(taskUUID=_DROP), "missingTaskUUID"),
    ("taskUUID", current(taskUUID="not-a-uuid"), "invalidTaskUUID"),
    ("taskUUID", current(taskUUID="23c7f549-0b89-1f39-80bb-d0e68af66dc5"), "invalidTaskUUID"),  # version 1
    ("taskUUID", current(taskUUID=12), "invalidTaskUUID"),
    ("model", current(model=_DROP), "missingModel"),
    ("model", current(model=""), "invalidModel"),
    ("model", current(model=150), "invalidModel"),
    ("prompt", current(prompt=5), "invalidPrompt"),
    ("prompt", current(prompt="x" * 3001), "invalidPrompt"),
    ("inputs", current(inputs="cat.png"), "invalidInputs"),
    ("inputs.image", current(inputs={}), "missingInputsImage"),
    ("inputs.image", current(inputs=_DROP), "missingInputsImage"),
    ("inputs.image", current(inputs={"image": 7}), "invalidInputsImage"),
    ("inputs.image", current(inputs={"image": ""}), "invalidInputsImage"),
    ("inputs.image", current(inputImage=IMAGE), "invalidInputs"),
    ("inputs.mask", current(inputs={"image": IMAGE, "mask": IMAGE}), "unsupportedParameter"),
    ("inputImages", current(inputs=_DROP, inputImages=[IMAGE, IMAGE]), "unsupportedInputImages"),
    ("inputImages", current(inputs=_DROP, inputImages=[]), "invalidInputImages"),
    ("inputImages", current(inputs=_DROP, inputImage=IMAGE, inputImages=[IMAGE]), "invalidInputImage"),
    ("deliveryMethod", current(deliveryMethod="later"), "invalidDeliveryMethod"),
    ("webhookURL", current(webhookURL="ftp://127.0.0.1/x"), "invalidWebhookURL"),
    ("webhookURL", current(webhookURL="not a url"), "invalidWebhookURL"),
    ("uploadEndpoint", current(uploadEndpoint="file:///etc/passwd"), "invalidUploadEndpoint"),
    ("includeCost", current(includeCost="yes"), "invalidIncludeCost"),
    ("outputType", current(outputType="file"), "invalidOutputType"),
    ("outputFormat", current(outputFormat="GIF"), "invalidOutputFormat"),
    ("outputQuality", current(outputQuality=19), "invalidOutputQuality"),
    ("outputQuality", current(outputQuality=100), "invalidOutputQuality"),
    ("outputQuality", current(outputQuality=50.5), "invalidOutputQuality"),
    ("outputQuality", current(outputQuality=True), "invalidOutputQuality"),
    ("ttl", current(ttl=59), "invalidTtl"),
    ("ttl", current(ttl="60"), "invalidTtl"),
    ("detail", current(detail="max"), "invalidDetail"),
    ("imageTokens", current(imageTokens=0), "invalidImageTokens"),
    ("imageTokens", current(imageTokens=64.5), "invalidImageTokens"),
    ("imageTokens", current(imageTokens="640"), "invalidImageTokens"),
    ("imageTokens", current(imageTokens=True), "invalidImageTokens"),
    ("tokenSelection", current(imageTokens=640, tokenSelection="random"), "invalidTokenSelection"),
    ("tokenSelection", current(tokenSelection=None), "invalidTokenSelection"),
    ("maxTokens", current(maxTokens=0), "invalidMaxTokens"),
    ("temperature", current(temperature=float("nan")), "invalidTemperature"),
    ("topP", current(topP=0), "invalidTopP"),
    ("seed", current(seed=-1), "invalidSeed"),
    ("colour", current(colour="red"), "unsupportedParameter"),
]


@pytest.mark.parametrize(("parameter", "task", "code"), BROKEN, ids=[f"{p}:{c}" for p, _, c in BROKEN])
def test_each_rule_rejects_a_breaking_input(parameter: str, task: dict[str, Any], code: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_caption_request(task)
    item = caught.value.error_item
    assert item["code"] == code
    assert item["parameter"] == parameter
    assert item["message"]
    assert item.get("taskType") == (task.get("taskType") if isinstance(task.get("taskType"), str) else None)


def test_error_item_carries_the_task_identity() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_caption_request(current(deliveryMethod="later"))
    assert caught.value.error_item == {
        "code": "invalidDeliveryMethod",
        "message": caught.value.message,
        "parameter": "deliveryMethod",
        "taskType": "caption",
        "taskUUID": UUID,
    }


def test_a_task_that_is_not_an_object() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_caption_request(["caption"])
    assert caught.value.code == "invalidTask"


def test_invalid_uuid_is_not_echoed_as_the_task_uuid() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_caption_request(current(taskUUID="../../etc"))
    assert "taskUUID" not in caught.value.error_item


def test_response_item_shape() -> None:
    assert caption_response(UUID, "A cat.") == {"taskType": "imageCaption", "taskUUID": UUID, "text": "A cat."}
    assert caption_response(UUID, "A cat.", 0.0019)["cost"] == 0.0019
