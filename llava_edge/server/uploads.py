"""Runware ``imageUpload``: a client stores an image once and captions it later by UUID or by its URL here.

The image is decoded before it is kept (a file that is not an image is refused at upload), at most
``UPLOADS_AT_ONCE`` at a time, outside the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from llava_edge.errors import InvalidRequestError, LlavaEdgeError
from llava_edge.images import decode_image_bytes, read_image_bytes
from llava_edge.server.image_reading import in_daemon_thread
from llava_edge.server.resident_model import ResidentModel
from llava_edge.server.task_errors import require_task_uuid
from llava_edge.server.task_results import Outcome

UPLOAD_TASK_TYPE = "imageUpload"
UPLOADS_AT_ONCE = 2
"""Uploads decoded at the same time (each may hold a 40-megapixel image in memory)."""


class ImageUploads:
    """The ``imageUpload`` task handler, storing into the resident model's image store."""

    def __init__(self, resident: ResidentModel):
        self._resident = resident
        self._slots = asyncio.Semaphore(UPLOADS_AT_ONCE)

    async def __call__(self, raw: dict[str, Any], base_url: str) -> Outcome:
        """Answer an ``imageUpload`` task; ``base_url`` roots the ``imageURL``."""
        task_uuid = require_task_uuid(raw)
        unknown = sorted(set(raw) - {"taskType", "taskUUID", "image"})
        if unknown:
            raise InvalidRequestError(
                f"Unknown parameter {unknown[0]!r} for imageUpload; send taskType, taskUUID and image.",
                code="unsupportedParameter", parameter=unknown[0],
            )
        image = raw.get("image")
        if not isinstance(image, str) or not image.strip():
            raise InvalidRequestError(
                "image is required: a data URI, base64 string or URL.", code="missingImage", parameter="image"
            )
        async with self._slots:
            name = await in_daemon_thread(self._store_image, image)
        image_uuid = name.split(".", 1)[0]
        return Outcome({"taskType": UPLOAD_TASK_TYPE, "taskUUID": task_uuid, "imageUUID": image_uuid,
                        "imageURL": f"{base_url}images/{name}"})

    def _store_image(self, image: str) -> str:
        """Validate (decode) an uploaded image and store its bytes; answers the stored file name."""
        limits = replace(self._resident.captioner.image_limits, allow_paths=False)
        store = self._resident.captioner.image_store
        try:
            data = read_image_bytes(image, limits=limits, store=store)
            decode_image_bytes(data, limits)
            return store.path(store.put(data)).name
        except LlavaEdgeError as err:
            err.parameter = "image"
            raise
