"""Reading a caption job's images before it may queue for the model, outside the model thread.

Each image is read in a daemon thread of its own (``in_daemon_thread``): inline ones (data URIs, base64, stored
uploads, this server's own ``/images/`` URLs) at once, network fetches each in one of ``READS_AT_ONCE`` fetch
slots shared round-robin between clients (``read_policy``). A request has ONE fetch deadline for all its images,
slot waits included (``ServerSettings.fetch_deadline``): each fetch gets what is left of it. Then the images are
sized from their headers and the request is refused at once when they break the per-request pixel bound or
cannot fit the context (``request_budget``); nothing is decoded here, and nothing refused is decoded at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from llava_edge.errors import InvalidImageError
from llava_edge.images import ImageLimits, image_size, read_image_bytes
from llava_edge.schema import DEFAULT_PROMPT
from llava_edge.server.fetch_slots import FetchSlots
from llava_edge.server.image_reading import in_daemon_thread, own_image_uuid
from llava_edge.server.jobs import Job
from llava_edge.server.read_policy import needs_fetch_slot
from llava_edge.server.request_budget import check_before_decoding
from llava_edge.server.settings import ServerSettings

if TYPE_CHECKING:
    from llava_edge.api import Captioner
    from llava_edge.image_store import ImageStore

READS_AT_ONCE = 4
"""Image URLs fetched at the same time, all clients together."""
T = TypeVar("T")
_Read = tuple[bytes, tuple[int, int]]


class ImageIntake:
    """Reads and sizes the images of jobs; see the module docstring."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.slots = FetchSlots(READS_AT_ONCE)

    async def read(self, job: Job, captioner: Captioner, base_url: str) -> list[bytes]:
        """The job's image bytes, in order, once all are read and the request passed the checks on their sizes.

        Raises:
            InvalidImageError: an image cannot be read, the fetch deadline passed, or the pixel bound is broken.
            ContextOverflowError: the images cannot fit the context with the prompt and the answer.
        """
        limits = replace(captioner.image_limits, allow_paths=False)
        seconds = self.settings.fetch_deadline
        deadline = time.monotonic() + seconds
        reads = [self._read_one(source, job.client, base_url, limits, captioner.image_store, deadline)
                 for source in job.sources]
        try:
            async with asyncio.timeout(seconds):
                read = await _all_or_first_error(reads)
        except TimeoutError:
            raise InvalidImageError(
                f"The request's images were not all read within {seconds:g} s (one deadline for all the image "
                "URLs of a request). Use a faster host, fewer URLs, or send the images inline (base64).",
                code="timeout",
            ) from None
        self._check_sizes(job, [size for _, size in read], captioner)
        return [data for data, _ in read]

    async def _read_one(self, source: str, client: str, base_url: str, limits: ImageLimits, store: ImageStore,
                        deadline: float) -> _Read:
        if not needs_fetch_slot(source, base_url):
            return await in_daemon_thread(_read_and_size, own_image_uuid(source, base_url) or source, limits, store)
        async with self.slots.slot(client):
            left = max(0.001, deadline - time.monotonic())
            transfer = replace(limits.transfer, deadline=min(limits.transfer.deadline, left))
            return await in_daemon_thread(_read_and_size, source, replace(limits, transfer=transfer), store)

    def _check_sizes(self, job: Job, sizes: list[tuple[int, int]], captioner: Captioner) -> None:
        n_ctx = captioner.runtime.options.n_ctx
        if job.chat is not None:
            call = job.chat
            tokens = call.work.budget.tokens if call.work.budget is not None else None
            check_before_decoding(sizes, detail=call.detail, image_tokens=tokens,
                                  prompt_chars=sum(map(len, call.prompt)), max_tokens=call.options.max_tokens,
                                  n_ctx=n_ctx, max_pixels=self.settings.max_request_pixels)
            return
        request = job.request
        assert request is not None  # a job is a chat call or a Runware task
        max_tokens = request.max_tokens if request.max_tokens is not None else captioner.generation.max_tokens
        check_before_decoding(sizes, detail=request.detail, image_tokens=request.image_tokens,
                              prompt_chars=len(request.prompt or DEFAULT_PROMPT), max_tokens=max_tokens,
                              n_ctx=n_ctx, max_pixels=self.settings.max_request_pixels)


def _read_and_size(source: str, limits: ImageLimits, store: ImageStore) -> _Read:
    data = read_image_bytes(source, limits=limits, store=store)
    return data, image_size(data, limits)


async def _all_or_first_error(coroutines: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run the coroutines together; their results in order, or the first error raised (the others are
    cancelled then, so their fetch slots are freed at once)."""
    if not coroutines:
        return []
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
