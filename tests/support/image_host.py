"""A scripted image host for URL-fetch tests: fixed routes, a redirect to ftp, and a trickling endless body."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler
from typing import ClassVar


class ImageRoutes(BaseHTTPRequestHandler):
    routes: ClassVar[dict[str, tuple[int, str, bytes]]] = {}

    def do_GET(self) -> None:
        if self.path == "/endless":
            return self._endless()
        if self.path == "/redirect-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x.png")
            self.end_headers()
            return None
        status, content_type, body = self.routes.get(self.path, (404, "text/plain", b"missing"))
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return None

    def _endless(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        for _ in range(400):  # bounded: 400 x 0.05 s at most
            try:
                self.wfile.write(b"\0" * 1024)
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.05)

    def log_message(self, *args: object) -> None:
        pass
