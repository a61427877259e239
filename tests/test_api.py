"""The Runware request/response in process: the model page's four examples, both shapes, errors, cost."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from support.images import ImageFactory, data_uri

import llava_edge
from llava_edge import Captioner, caption, run_task
from llava_edge.cost import RUNWARE_PRICE_PER_TOKEN, CostModel
from llava_edge.errors import InvalidImageError, InvalidRequestError, LlavaEdgeError, UnknownModelError

EXAMPLE_PROMPTS = [
    (
        "Describe this image in 3-5 vivid sentences, identifying the main subject, setting, notable objects, mood, "
        "and any surprising visual details."
    ),
    (
        "Provide a vivid caption for this image in 2-3 sentences, identifying the main setting, notable objects, "
        "lighting, mood, and any implied story suggested by the scene."
    ),
    (
        "Provide a detailed caption for this image, describing the setting, notable objects, lighting, mood, and any "
        "unusual visual contrasts."
    ),
    (
        "Describe this image in 3-5 sentences, identifying the main setting, notable objects, lighting conditions, and "
        "the overall mood. Mention any details that suggest a story."
    ),
]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def photo_site(tmp_path: Path, make_image: ImageFactory) -> Iterator[str]:
    """Local stand-ins for the example pages' image URLs, served on loopback."""
    for index, (width, height) in enumerate([(640, 480), (480, 640), (336, 336), (1024, 576)]):
        (tmp_path / f"photo{index}.jpg").write_bytes(make_image(width, height, format="JPEG"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def example_request(index: int, image: str, include_cost: bool) -> dict[str, Any]:
    return {
        "taskType": "caption",
        "taskUUID": str(uuid.uuid4()),
        "model": "runware:150@2",
        "prompt": EXAMPLE_PROMPTS[index],
        "inputs": {"image": image},
        "includeCost": include_cost,
    }


@pytest.mark.parametrize("index", range(4))
def test_model_page_examples(captioner: Captioner, photo_site: str, index: int) -> None:
    for include_cost in (True, False):
        request = example_request(index, f"{photo_site}/photo{index}.jpg", include_cost)
        response = captioner.run_task(request)
        assert response["taskType"] == "imageCaption"
        assert response["taskUUID"] == request["taskUUID"]
        assert isinstance(response["text"], str) and response["text"].strip()
        assert ("cost" in response) is include_cost
        if include_cost:
            assert response["cost"] > 0


def test_legacy_shape_with_a_data_uri(captioner: Captioner, make_image: ImageFactory) -> None:
    request = {"taskType": "imageCaption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2",
               "inputImage": data_uri(make_image(200, 150)), "prompt": [EXAMPLE_PROMPTS[0]]}
    response = captioner.run_task(request)
    assert set(response) == {"taskType", "taskUUID", "text"}
    assert response["taskType"] == "imageCaption" and response["taskUUID"] == request["taskUUID"]


def test_a_stored_image_uuid_is_accepted(captioner: Captioner, make_image: ImageFactory) -> None:
    image_uuid = captioner.image_store.put(make_image(80, 80))
    request = example_request(0, image_uuid, False)
    assert captioner.run_task(request)["text"]


def test_errors_carry_the_task_identity(captioner: Captioner) -> None:
    request = example_request(0, "data:image/png;base64,AAAA", False)
    with pytest.raises(InvalidImageError) as caught:
        captioner.run_task(request)
    item = caught.value.error_item
    assert item["taskUUID"] == request["taskUUID"] and item["taskType"] == "caption"
    assert item["code"] in ("invalidInputsImage", "unsupportedImageFormat") and item["parameter"] == "inputs.image"


def test_an_unknown_model_is_a_runware_error(captioner: Captioner) -> None:
    request = example_request(0, "https://127.0.0.1/x.png", False) | {"model": "runware:999@9"}
    with pytest.raises(UnknownModelError) as caught:
        captioner.run_task(request)
    assert caught.value.error_item["code"] == "invalidModel"
    assert caught.value.error_item["taskUUID"] == request["taskUUID"]


def test_local_paths_are_refused_in_requests(captioner: Captioner, tmp_path: Path, make_image: ImageFactory) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(make_image())
    with pytest.raises(InvalidImageError):
        captioner.run_task(example_request(0, str(secret), False))


def test_run_task_options_reach_the_sampler(captioner: Captioner, make_image: ImageFactory) -> None:
    request = example_request(1, data_uri(make_image(64, 64)), False) | {"maxTokens": 3, "seed": 9}
    first, second = captioner.run_task(request), captioner.run_task(request | {"taskUUID": str(uuid.uuid4())})
    assert first["text"] == second["text"]
    assert len(captioner.runtime.tokenize(first["text"])) <= 4


def test_module_level_caption_and_run_task(tmp_path: Path, make_image: ImageFactory) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(make_image(120, 90))
    result = caption(str(path), EXAMPLE_PROMPTS[2], model="synthetic-tiny", include_cost=True,
                     options=llava_edge.GenerationOptions(max_tokens=8, seed=1))
    assert result["taskType"] == "imageCaption" and result["text"] and result["cost"] > 0
    uuid.UUID(result["taskUUID"], version=4)
    response = run_task(example_request(3, data_uri(path.read_bytes()), False) | {"model": "synthetic-tiny",
                                                                                   "maxTokens": 8})
    assert response["text"] and "cost" not in response
    assert caption(Image.open(path), model="synthetic-tiny")["text"]


def test_bad_request_through_module_level_run_task() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        run_task({"taskType": "caption", "taskUUID": "nope"})
    assert caught.value.code == "invalidTaskUUID"
    assert isinstance(caught.value, LlavaEdgeError) and isinstance(caught.value, ValueError)


def test_cost_model_default_mirrors_the_runware_price_and_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CostModel().cost(90, 30.0) == pytest.approx(0.0019, abs=1e-7)
    monkeypatch.setenv("LLAVA_EDGE_COST_PER_TOKEN", "0")
    monkeypatch.setenv("LLAVA_EDGE_COST_PER_SECOND", "0.001")
    assert CostModel.from_env().cost(90, 2.0) == pytest.approx(0.002)
    assert RUNWARE_PRICE_PER_TOKEN > 0
    monkeypatch.setenv("LLAVA_EDGE_COST_PER_SECOND", "-1")
    with pytest.raises(InvalidRequestError, match="LLAVA_EDGE_COST_PER_SECOND"):
        CostModel.from_env()


def test_public_surface_is_explicit_and_sorted() -> None:
    assert llava_edge.__all__ == sorted(llava_edge.__all__)
    public = {name for name in dir(llava_edge) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(llava_edge, name)).__name__ == "module"}
    assert public - modules == set(llava_edge.__all__) - {"errors", "__version__"}
    assert "errors" in modules
