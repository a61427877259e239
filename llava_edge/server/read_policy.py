"""Who gets the next image fetch slot: a pure policy (no clock, no locks, no I/O), kept by the image reader.

Only network fetches (http/https URLs of other hosts) take a slot; inline images (data URIs, base64, stored
uploads and this server's own ``/images/`` URLs) are read at once and never wait behind the network. Slots are
taken per image, not per request, and shared round-robin between clients: a freed slot goes to the waiting
client served least recently, so a request naming many slow URLs cannot hold every slot while another client's
image waits. A client is a WebSocket connection, else an API key, else a remote address (``client_key``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from llava_edge.server.image_reading import own_image_uuid


class Waiting(Protocol):
    """What the policy reads of an image waiting for a fetch slot."""

    @property
    def client(self) -> str:
        """Whose it is (``client_key``)."""

    @property
    def order(self) -> int:
        """Its place in arrival order (increasing)."""


Waiter = TypeVar("Waiter", bound=Waiting)


def next_fetch(waiting: Sequence[Waiter], last_served: Mapping[str, int]) -> Waiter | None:
    """The waiting image to fetch next: the one whose client was served least recently (a client never served
    first), and among that client's, the first to arrive. None when nothing waits.

    Args:
        waiting: images waiting for a slot.
        last_served: for each client served so far, an increasing stamp of its latest grant.
    """
    if not waiting:
        return None
    return min(waiting, key=lambda waiter: (last_served.get(waiter.client, -1), waiter.order))


def needs_fetch_slot(source: str, base_url: str) -> bool:
    """Whether reading this image reference goes over the network: an http(s) URL that is not one of this
    server's own ``/images/<uuid>.<ext>`` (those are read from the image store)."""
    text = source.strip()
    return text[:8].lower().startswith(("http://", "https://")) and own_image_uuid(text, base_url) is None


def client_key(*, connection: str | None = None, api_key: str | None = None, address: str = "") -> str:
    """The client a request counts for: its WebSocket connection, else its API key (hashed: never kept in the
    clear), else its remote address."""
    if connection:
        return f"ws:{connection}"
    if api_key:
        return "key:" + hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"addr:{address}"
