"""Nothing in a request reads files outside the data directory, and uploads are stored under generated names.

A real PNG is placed outside the data directory, so a request that managed to read it would be captioned
instead of refused. An audit hook on ``open`` also proves the file was never opened, whatever the answer.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.images import ImageFactory, data_uri

import llava_edge
from llava_edge import Captioner
from llava_edge.errors import InvalidImageError, InvalidRequestError
from llava_edge.image_store import ImageStore
from llava_edge.paths import data_dir
from llava_edge.schema import is_uuid4

_opened: list[str] | None = None
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.path.realpath(os.fsdecode(args[0])))


@pytest.fixture
def opened() -> Iterator[list[str]]:
    """Every path Python opens while the test runs (audit hooks cannot be removed, so one is added per process)."""
    global _opened, _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    _opened = []
    yield _opened
    _opened = None


@pytest.fixture
def secret(tmp_path: Path, make_image: ImageFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A readable PNG outside the data directory; the working directory is its parent's parent."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "secret.png"
    path.write_bytes(make_image(40, 30))
    monkeypatch.chdir(tmp_path)
    return path


def caption_task(image: object, field: str = "inputs.image") -> dict[str, Any]:
    task: dict[str, Any] = {"taskType": "caption", "taskUUID": str(uuid.uuid4()), "model": "runware:150@2"}
    if field == "inputs.image":
        task["inputs"] = {"image": image}
    elif field == "inputImages":
        task |= {"taskType": "imageCaption", "inputImages": [image]}
    else:
        task |= {"taskType": "imageCaption", field: image}
    return task


def references_to(path: Path) -> list[str]:
    absolute = str(path)
    return [
        absolute, f"  {absolute}\n", absolute.replace("/", "//"), "outside/secret.png", "./outside/secret.png",
        f"../{path.parent.parent.name}/outside/secret.png", f"file://{absolute}", f"FILE://{absolute}",
        f"file://localhost{absolute}", f"file:{absolute}", "/etc/passwd", "/etc/hostname", "/proc/self/environ",
        "~/.ssh/id_rsa", "..\\..\\windows\\win.ini", f"{absolute}\0.png",
    ]


@pytest.mark.parametrize("field", ["inputs.image", "inputImage", "inputImages"])
def test_local_paths_and_file_urls_are_never_read(
    captioner: Captioner, secret: Path, opened: list[str], field: str
) -> None:
    for reference in references_to(secret):
        with pytest.raises(InvalidImageError) as caught:
            captioner.run_task(caption_task(reference, field))
        assert caught.value.error_item["parameter"] in ("inputs.image", field), reference
    assert not [path for path in opened if path.startswith(("/etc", "/proc", str(secret.parent)))]


def test_a_request_cannot_tell_whether_a_file_exists(captioner: Captioner, secret: Path) -> None:
    answers = []
    for path in (secret, secret.with_name("absent.png")):
        with pytest.raises(InvalidImageError) as caught:
            captioner.run_task(caption_task(str(path)))
        answers.append((caught.value.code, str(caught.value).replace(path.name, "<name>")))
    assert answers[0] == answers[1]


def test_the_public_run_task_refuses_paths_too(secret: Path, opened: list[str]) -> None:
    with pytest.raises(InvalidImageError):
        llava_edge.run_task({**caption_task(str(secret)), "model": "synthetic-tiny"})
    assert str(secret) not in opened


# --- image UUIDs ----------------------------------------------------------------------------------------


@pytest.fixture
def stored(captioner: Captioner, make_image: ImageFactory) -> str:
    return captioner.image_store.put(make_image(24, 24))


def test_a_stored_uuid_is_captioned(captioner: Captioner, stored: str) -> None:
    for reference in (stored, stored.upper(), f" {stored} "):
        assert captioner.run_task(caption_task(reference))["text"]


def test_path_traversal_as_image_uuid(captioner: Captioner, stored: str, secret: Path, opened: list[str]) -> None:
    root = captioner.image_store.root
    hostile = [
        "../../etc/passwd", f"../{stored}.png", f"{stored}/../../../etc/passwd", f"{stored}.png", f"{stored}/",
        f"images/{stored}", f"{root}/{stored}.png", "*", f"{stored[:-1]}*", f"{stored[:-1]}?", f"{{{stored}}}",
        stored.replace("-", ""), stored.replace("-", "") + "----", f"urn:uuid:{stored}",
        os.path.relpath(secret, root), f"{stored}\0../../etc/passwd",
    ]
    for reference in hostile:
        with pytest.raises(InvalidImageError):
            captioner.run_task(caption_task(reference))
        with pytest.raises(InvalidImageError):
            captioner.image_store.path(reference)
    expected = (str(root.resolve()), str(Path(llava_edge.__file__).parent), os.path.realpath(sys.base_prefix),
                os.path.realpath(sys.prefix))  # the store, package data (models.toml), lazily imported modules
    assert not [path for path in opened if not path.startswith(expected)]


def test_delete_never_leaves_the_store(tmp_path: Path, make_image: ImageFactory) -> None:
    store = ImageStore(tmp_path / "images")
    victim = tmp_path / "victim.png"
    victim.write_bytes(make_image())
    kept = store.put(make_image())
    for reference in ("../victim", "../victim.png", str(victim), "*", f"{kept[:-1]}*"):
        store.delete(reference)
    assert victim.exists() and store.path(kept).exists()


def test_non_canonical_uuids_are_not_uuids() -> None:
    canonical = str(uuid.uuid4())
    assert is_uuid4(canonical) and is_uuid4(canonical.upper())
    for other in (canonical.replace("-", "") + "----", "----" + canonical.replace("-", ""), str(uuid.uuid1())):
        assert not is_uuid4(other)
        with pytest.raises(InvalidRequestError) as caught:
            llava_edge.schema.parse_caption_request({**caption_task("aGk="), "taskUUID": other})
        assert caught.value.code == "invalidTaskUUID"


# --- uploads --------------------------------------------------------------------------------------------


def test_uploads_are_stored_under_generated_names(tmp_path: Path, make_image: ImageFactory) -> None:
    store = ImageStore(tmp_path / "images")
    uploads = [
        (make_image(8, 8), "png"), (make_image(8, 8, format="JPEG"), "jpg"), (make_image(8, 8, format="WEBP"), "webp"),
        (b"../../etc/passwd", "bin"), (make_image(8, 8), "png"),  # the same bytes again: the same name
    ]
    names = []
    for data, extension in uploads:
        image_uuid = store.put(data)
        path = store.path(image_uuid)
        assert is_uuid4(image_uuid) and path.name == f"{image_uuid}.{extension}" and path.parent == store.root
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0  # private to the server's user
        names.append(path.name)
    assert len(set(names)) == len(uploads) - 1 and names[0] == names[-1]
    assert sorted(os.listdir(store.root)) == sorted(set(names))  # no temporary files left behind


def test_the_default_store_is_inside_the_data_directory(isolated_home: Path) -> None:
    root = ImageStore().root
    assert root == data_dir() / "images" and root.is_relative_to(isolated_home)


# --- redirects ------------------------------------------------------------------------------------------


class _RedirectToFile(BaseHTTPRequestHandler):
    target = "file:///etc/passwd"

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def redirector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RedirectToFile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cat.png"
    server.shutdown()
    server.server_close()


def test_a_redirect_to_a_file_url_is_refused(captioner: Captioner, redirector: str, opened: list[str]) -> None:
    with pytest.raises(InvalidImageError, match=r"redirect refused|HTTP 302"):  # urllib itself refuses file:
        captioner.run_task(caption_task(redirector))
    assert "/etc/passwd" not in opened


def test_image_given_as_data_uri_still_works(captioner: Captioner, make_image: ImageFactory) -> None:
    """The refusals above are about references, not about images: the same pixels as a data URI are captioned."""
    assert captioner.run_task(caption_task(data_uri(make_image(40, 30))))["text"]
