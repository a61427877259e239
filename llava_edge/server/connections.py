"""Connection limits below HTTP: a socket must send a complete request head within ``head_timeout``
seconds of connecting, or it is closed (no slowloris); beyond ``max_sockets`` open sockets, a new one is
closed at once. Idle sockets therefore never hold capacity that requests need."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from llava_edge.server.settings import ServerSettings


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the head deadline and the socket cap (set by ``guarded_protocol``)."""

    head_timeout = 5.0
    max_sockets = 512

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_sockets:
            transport.close()
            return
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_overdue)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:  # a complete head arrived: from now on uvicorn's own timers apply
            self._cancel_head_timer()

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._cancel_head_timer()
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None


def guarded_protocol(settings: ServerSettings) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's ``http=`` setting, with the settings' limits."""
    limits = {"head_timeout": settings.head_timeout, "max_sockets": settings.max_sockets}
    return type("LlavaEdgeH11Protocol", (GuardedH11Protocol,), limits)
