"""What a client sees of an error: its message with every absolute file path cut to the file's name.

Errors are written for the person at the terminal, and many name the file they are about (a damaged model file,
the image store's folder, an OS error's path). A client of the server must not learn the operator's folders
(user names, the cache and store layout), so every error that becomes an answer passes through ``for_client``:
the three APIs' error bodies and every kept ``Outcome``. The whole message is logged once, for the operator,
whenever something was cut.
"""

from __future__ import annotations

import logging
import re

from llava_edge.errors import LlavaEdgeError

_log = logging.getLogger("llava_edge.server.errors")
_QUOTED_PATH = re.compile(r"""(?P<quote>['"])(?P<path>(?:/|[A-Za-z]:[\\/])[^'"\n]*[/\\][^'"\n]*)(?P=quote)""")
"""A quoted absolute path (POSIX or Windows), which may hold spaces."""
_BARE_PATH = re.compile(r"""(?<![\w.:/\\~\]@-])(?:/|[A-Za-z]:\\)[^\s'"`<>|]*[/\\][^\s'"`<>|]*""")
"""An absolute path of two parts at least, not inside a URL (``http://host/a/b``: its slashes follow ``:``, ``/``,
a host name or a port) and not relative."""


def public_message(text: str) -> str:
    """``text`` with each absolute path replaced by its last part (``/home/ann/models/x.gguf`` -> ``x.gguf``)."""
    text = _QUOTED_PATH.sub(lambda match: match["quote"] + _name(match["path"]) + match["quote"], text)
    return _BARE_PATH.sub(lambda match: _name(match.group()), text)


def for_client(error: LlavaEdgeError) -> LlavaEdgeError:
    """``error`` as it may be shown to a client (its message through ``public_message``), changed in place and
    returned; the whole message is logged when a path was cut."""
    shown = public_message(error.message)
    if shown != error.message:
        _log.warning("%s (the client was shown the file names only)", error.message)
        error.message = shown
        error.args = (shown,)
    return error


def _name(path: str) -> str:
    parts = [part for part in re.split(r"[/\\]", path) if part]
    return parts[-1] if parts else path
