"""The captioning page of ``llava-edge serve``: ``GET /`` for browsers, its two static files, and the XMP download.

* ``GET /`` answers the page to requests that accept ``text/html`` (browsers); every other client keeps
  getting Ollama's plain ``Ollama is running`` from the Ollama route, so clients that probe ``/`` still work.
* ``GET /page/app.js`` and ``/page/style.css``: the page's script and style, shipped inside the package
  (``llava_edge/server/page/``), no build step and nothing from other hosts.
* ``POST /page/xmp``: ``{"caption", "prompt", "model", "image"?, "keywords"?}`` -> the XMP sidecar that the
  ``caption`` command would write for that caption (``application/rdf+xml``).

The page and its files are public, like ``/health``: a browser cannot send a key with a navigation. Everything
the page does goes through the API routes, with the key when the server has one; the XMP route checks it too.
Every answer here carries a strict Content-Security-Policy (scripts and styles from this server only, no
inline code), and all of them sit behind ``RequestGuard``'s Host and Origin checks like every other route.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from llava_edge.errors import InvalidRequestError, LlavaEdgeError
from llava_edge.images import decode_image_bytes, read_image_bytes
from llava_edge.photos.caption_text import parse_keywords
from llava_edge.photos.pixels import pixel_hash
from llava_edge.photos.writer import caption_packet
from llava_edge.photos.xmp_packet import Marker
from llava_edge.server.bodies import read_json_object
from llava_edge.server.chat import authenticate_request
from llava_edge.server.image_reading import in_daemon_thread
from llava_edge.server.openai_api import openai_error

if TYPE_CHECKING:
    from llava_edge.server.settings import ServerSettings
    from llava_edge.server.task_service import TaskService

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""Scripts, styles and requests from this server only, no inline code; previews from the page's own blobs."""
PAGE_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
"""The page's static files (besides ``index.html``) and their media types."""
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_MAX_TEXT_CHARS = 20_000
XMP_AT_ONCE = 2
"""``/page/xmp`` requests whose image is decoded and hashed at the same time; the others wait their turn."""


@dataclass(frozen=True)
class PageFiles:
    """The page's files, read from the package once when the app is made."""

    index: bytes
    static: dict[str, bytes]

    @classmethod
    def load(cls) -> PageFiles:
        folder = resources.files("llava_edge.server").joinpath("page")
        return cls(folder.joinpath("index.html").read_bytes(),
                   {name: folder.joinpath(name).read_bytes() for name in PAGE_FILES})

    @property
    def size(self) -> int:
        """Bytes a browser loads for the page: the HTML and its static files."""
        return len(self.index) + sum(len(data) for data in self.static.values())


class _BrowserRoute(Route):
    """A route that only matches requests that accept HTML, so other clients reach the next route for the path."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is Match.NONE or not wants_html(scope):
            return Match.NONE, {}
        return match, child_scope


def wants_html(scope: Scope) -> bool:
    """True when the request's ``Accept`` header names ``text/html`` (what browsers send for a page)."""
    headers = scope.get("headers", [])
    return any(key.lower() == b"accept" and b"text/html" in value.lower() for key, value in headers)


def page_url(settings: ServerSettings) -> str:
    """Where a browser on this machine opens the page: an unspecified bind (``0.0.0.0``, ``::``) is reached
    at ``localhost``; an IPv6 address gets brackets."""
    host = settings.host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}/"


def add_page_routes(app: FastAPI, service: TaskService) -> None:
    """Register the page routes on ``app``; call it before the Ollama routes (they answer ``/`` to the rest)."""
    files = PageFiles.load()

    async def page(request: Request) -> Response:
        return Response(files.index, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files.static:
            return Response("Not found", status_code=404, media_type="text/plain", headers=_HEADERS)
        return Response(files.static[name], media_type=PAGE_FILES[name], headers=_HEADERS)

    decoding = asyncio.Semaphore(XMP_AT_ONCE)

    async def xmp(request: Request) -> Response:
        try:
            authenticate_request(request, service)
            fields = await read_json_object(request, service.settings.max_body_bytes)
            async with decoding:
                if await request.is_disconnected():  # gone while it waited: nobody wants the packet
                    return Response(status_code=204, headers=_HEADERS)
                packet = await in_daemon_thread(sidecar_for, fields, service)  # never delays the process's exit
        except LlavaEdgeError as err:
            return openai_error(err)
        return Response(packet, media_type="application/rdf+xml", headers=_HEADERS)

    app.router.routes.append(_BrowserRoute("/", page, methods=["GET"], include_in_schema=False))
    app.add_api_route("/page/xmp", xmp, methods=["POST"], include_in_schema=False)
    app.add_api_route("/page/{name}", static, methods=["GET"], include_in_schema=False)


def sidecar_for(fields: dict[str, Any], service: TaskService) -> bytes:
    """The XMP sidecar for a caption made on the page; with ``image`` (a data URI) its marker carries the
    pixels' hash, so ``llava-edge caption --xmp-sidecar`` later skips the image as already described. The work is
    bounded by the first frame, whatever the image holds: it is checked against the server's limits and
    decoded, then hashed (``pixel_hash`` reads no other frame), so a client that leaves leaves at most that.

    Raises:
        InvalidRequestError: a field is missing or of the wrong type, or the caption is empty.
        InvalidImageError: ``image`` is not a readable image.
    """
    caption, prompt, model = (_text(fields, name) for name in ("caption", "prompt", "model"))
    image = fields.get("image")
    content_hash = ""
    if image is not None:
        if not isinstance(image, str) or image.strip()[:5].lower() != "data:":
            raise InvalidRequestError("image must be a data URI.", code="invalid_type", parameter="image")
        limits = replace(service.captioner.image_limits, allow_paths=False)
        data = read_image_bytes(image, limits=limits, store=None)
        decode_image_bytes(data, limits)  # the server's size and memory limits, before hashing the pixels
        content_hash = pixel_hash(data)
    keywords = parse_keywords(caption) if fields.get("keywords") is True else None
    return caption_packet(caption, keywords, marker=Marker(model, prompt, content_hash))


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or len(value) > _MAX_TEXT_CHARS:
        raise InvalidRequestError(f"{name} must be a string of at most {_MAX_TEXT_CHARS} characters.",
                                  code="invalid_type", parameter=name)
    return value
