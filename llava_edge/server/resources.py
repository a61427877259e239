"""The server's plain resources: ``GET /health`` (model and queue) and ``GET /images/<uuid>.<ext>`` (images
stored by ``imageUpload``; only names the store itself gave out are served)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response

from llava_edge.errors import InvalidImageError
from llava_edge.schema import is_uuid4
from llava_edge.server.conversation import quoted
from llava_edge.server.families import error_response
from llava_edge.server.task_service import TaskService

IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp", "gif": "image/gif", "bmp": "image/bmp"}


def add_resources(app: FastAPI, service: TaskService) -> None:
    """Register ``/health`` and ``/images/{name}`` on ``app``."""

    @app.get("/health", summary="Loaded model and queue depth")
    async def health() -> dict[str, Any]:
        return service.health()

    @app.get("/images/{name}", summary="An image stored by imageUpload", response_class=FileResponse)
    async def stored_image(name: str) -> Response:
        try:
            path = _stored_image(service, name)
        except InvalidImageError as err:
            return error_response(f"/images/{name}", 404, err.code, err.message, err.parameter)
        return FileResponse(path, media_type=IMAGE_TYPES[path.suffix[1:]])


def _stored_image(service: TaskService, name: str) -> Path:
    """The file behind ``<uuid>.<ext>``."""
    image_uuid, _, extension = name.partition(".")
    if is_uuid4(image_uuid) and extension in IMAGE_TYPES:
        path = service.captioner.image_store.path(image_uuid)
        if path.name == name:
            return path
    raise InvalidImageError(f"No stored image is named {quoted(name)}.", code="notFound", parameter="name")
