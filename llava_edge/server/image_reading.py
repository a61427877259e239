"""How the server reads a caption task's image: outside the model thread (in daemon threads, so a read blocked
on a slow peer never delays the process's exit), under the server's fetch policy, and from its own image
store when the URL is one of this server's ``/images/<uuid>.<ext>``."""

from __future__ import annotations

import asyncio
import copy
import re
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from llava_edge.schema import is_uuid4
from llava_edge.server.settings import ServerSettings

if TYPE_CHECKING:
    from llava_edge.api import Captioner

def fetching_from(captioner: Captioner, settings: ServerSettings) -> Captioner:
    """The captioner as the server uses it: the same loaded model, with image URL fetches limited to the
    settings' ``fetch_hosts`` and fetch policy (``outbound``). A shallow copy, so the caller's own captioner
    keeps its limits."""
    if settings.fetch_hosts is None and settings.allow_private_fetch:
        return captioner
    view = copy.copy(captioner)
    limits = captioner.image_limits
    view.image_limits = replace(limits, transfer=settings.outbound(limits.transfer))
    return view


T = TypeVar("T")





async def in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a daemon thread of its own. Unlike ``asyncio.to_thread``, a read still blocked
    on a slow peer never delays the process's exit (the loop's executor is joined at shutdown)."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not result.done():
            outcome()

    def run() -> None:
        try:
            value = function(*args)
        except BaseException as err:
            failure = err  # ``err`` itself is unbound when the except block ends
            loop.call_soon_threadsafe(settle, lambda: result.set_exception(failure))
        else:
            loop.call_soon_threadsafe(settle, lambda: result.set_result(value))

    threading.Thread(target=run, name="llava-edge-read", daemon=True).start()
    return await result


_OWN_IMAGE_PATH = re.compile(r"/images/([0-9a-fA-F-]{36})\.[a-z]{3,4}")


def own_image_uuid(image: str, base_url: str) -> str | None:
    """The imageUUID behind a URL of this server's own ``/images/<uuid>.<ext>`` (as the client reached the
    server), else None."""
    parts, base = urlsplit(image.strip()), urlsplit(base_url)
    same_server = parts.scheme in ("http", "https") and parts.netloc.lower() == base.netloc.lower()
    match = _OWN_IMAGE_PATH.fullmatch(parts.path) if same_server and not parts.query else None
    return match.group(1).lower() if match and is_uuid4(match.group(1).lower()) else None
