"""The page's server side without a browser (the real server on 127.0.0.1, tiny model): who gets the page at
``/``, its size and Content-Security-Policy, the guard in front of it, the XMP download, and the progress
events the page streams (opt-in, so OpenAI clients see the plain stream)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from html.parser import HTMLParser
from importlib import resources
from typing import Any

import httpx
import openai
import pytest
from support.images import data_uri, encode_image
from support.servers import LiveServer, ServeProcess

from llava_edge.batch.record_files import _FORMULA_START as CSV_FORMULA_START
from llava_edge.photos.pixels import pixel_hash
from llava_edge.photos.xmp_packet import DC, LLAVA_EDGE, RDF
from llava_edge.server.page import PAGE_FILES, PageFiles, page_url
from llava_edge.server.settings import ServerSettings

KEY = "sixteen-char-key-0"
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture
def png(make_image: Callable[..., bytes]) -> str:
    return data_uri(make_image(40, 30))


def test_browsers_get_the_page_and_other_clients_ollamas_line(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    page = httpx.get(f"{server.http}/", headers=HTML)
    plain = [httpx.get(f"{server.http}/"), httpx.get(f"{server.http}/", headers={"Accept": "application/json"})]

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.content == PageFiles.load().index and b'<script src="/page/app.js"' in page.content
    assert [(answer.status_code, answer.text) for answer in plain] == [(200, "Ollama is running")] * 2
    assert httpx.post(f"{server.http}/", json=[{"taskType": "ping"}], headers=HTML).json()["data"][0]["pong"]


def test_the_page_has_a_strict_policy_and_no_inline_code(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    answers = [httpx.get(f"{server.http}/", headers=HTML)]
    answers += [httpx.get(f"{server.http}/page/{name}") for name in PAGE_FILES]

    for answer in answers:
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "unsafe" not in policy and "frame-ancestors 'none'" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert [answer.headers["content-type"] for answer in answers[1:]] == list(PAGE_FILES.values())
    inline = InlineCode()
    inline.feed(answers[0].text)
    assert inline.found == []


class InlineCode(HTMLParser):
    """Inline scripts, style elements or attributes, event handlers and off-site URLs in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        named = dict(attrs)
        if tag == "style" or (tag == "script" and not named.get("src")):
            self.found.append(tag)
        for name, value in attrs:
            if name == "style" or name.startswith("on") or (value or "").startswith(("http:", "https:", "//")):
                self.found.append(f"{tag} {name}={value}")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.found.append("script text")


def test_the_page_loads_in_under_100_kb() -> None:
    folder = resources.files("llava_edge.server").joinpath("page")
    shipped = {entry.name for entry in folder.iterdir()}

    assert shipped == {"index.html", *PAGE_FILES}
    assert PageFiles.load().size < 100 * 1024


def test_the_csv_download_guards_formulas_by_the_batch_csv_s_rule() -> None:
    """The page's CSV and ``caption --out x.csv`` prefix ``'`` to the same first characters (the browser test
    downloads one and reads it back)."""
    script = PageFiles.load().static["app.js"].decode()
    found = re.search(r"const FORMULA_START = /\^\[(?P<chars>[^\]]+)\]/;", script)
    assert found is not None, "app.js no longer defines FORMULA_START"
    escapes = {"\\-": "-", "\\t": "\t", "\\r": "\r"}
    chars = set(re.sub(r"\\.", lambda escape: escapes[escape.group()], found["chars"]))
    assert chars == set(CSV_FORMULA_START)


def test_page_files_are_served_by_name_only(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    for path in ("/page/index.py", "/page/..%2Fpage.py", "/page/%2e%2e/app.py", "/page/"):
        assert httpx.get(f"{server.http}{path}").status_code == 404, path


def test_the_page_sits_behind_the_host_and_origin_checks(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    foreign_host = httpx.get(f"{server.http}/", headers={**HTML, "Host": "rebind.example"})
    own = {"Origin": server.http}
    same_origin = httpx.post(f"{server.http}/page/xmp", json=xmp_request(), headers=own)
    other_origin = httpx.post(f"{server.http}/page/xmp", json=xmp_request(), headers={"Origin": "http://evil.example"})

    assert foreign_host.status_code == 403
    assert same_origin.status_code == 200
    assert other_origin.status_code == 403 and other_origin.json()["errors"][0]["code"] == "invalidOrigin"


def test_the_page_is_public_but_its_xmp_route_needs_the_key(serve: Callable[..., LiveServer]) -> None:
    server = serve(api_key=KEY)

    assert httpx.get(f"{server.http}/", headers=HTML).status_code == 200
    assert httpx.get(f"{server.http}/page/app.js").status_code == 200
    refused = httpx.post(f"{server.http}/page/xmp", json=xmp_request())
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    keyed = httpx.post(f"{server.http}/page/xmp", json=xmp_request(), headers={"Authorization": f"Bearer {KEY}"})
    assert keyed.status_code == 200


def xmp_request(**fields: Any) -> dict[str, Any]:
    return {"caption": "A red boat on a lake.", "prompt": "Describe this image in detail.", "model": "synthetic-tiny",
            **fields}


def test_the_xmp_route_answers_the_sidecar_the_caption_command_writes(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    image = encode_image(30, 20)
    answer = httpx.post(f"{server.http}/page/xmp", json=xmp_request(image=data_uri(image), keywords=False))
    keywords = httpx.post(f"{server.http}/page/xmp", json=xmp_request(caption="boat, lake, red", keywords=True))

    assert answer.status_code == 200 and answer.headers["content-type"] == "application/rdf+xml"
    description = ElementTree.fromstring(answer.content).find(f".//{{{RDF}}}Description")
    assert description is not None
    assert description.findtext(f"{{{DC}}}description/{{{RDF}}}Alt/{{{RDF}}}li") == "A red boat on a lake."
    assert description.findtext(f"{{{LLAVA_EDGE}}}model") == "synthetic-tiny"
    assert description.findtext(f"{{{LLAVA_EDGE}}}contentHash") == pixel_hash(image)
    bag = ElementTree.fromstring(keywords.content).findall(f".//{{{DC}}}subject/{{{RDF}}}Bag/{{{RDF}}}li")
    assert [item.text for item in bag] == ["boat", "lake", "red"]


@pytest.mark.parametrize(("fields", "parameter"), [
    ({"caption": ""}, "text"), ({"caption": 3}, "caption"), ({"image": "/etc/passwd"}, "image"),
    ({"image": "http://127.0.0.1:9/x.png"}, "image"), ({"image": "data:image/png;base64,AAAA"}, "inputs.image"),
])
def test_the_xmp_route_refuses_what_it_cannot_use(serve: Callable[..., LiveServer], fields: dict[str, Any],
                                                   parameter: str) -> None:
    server = serve()
    answer = httpx.post(f"{server.http}/page/xmp", json=xmp_request(**fields))

    assert answer.status_code == 400 and answer.json()["error"]["param"] == parameter


def sse_events(server: LiveServer, png: str, **stream_options: bool) -> list[tuple[str, Any]]:
    """(event name, data) of a streamed chat completion, ``[DONE]`` excluded."""
    body = {"model": "llava", "stream": True, "max_tokens": 4, "stream_options": stream_options,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe."},
                                                      {"type": "image_url", "image_url": {"url": png}}]}]}
    events = []
    with httpx.stream("POST", f"{server.http}/v1/chat/completions", json=body, timeout=30) as response:
        for block in response.read().decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines())
            if fields and fields["data"] != "[DONE]":
                events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def test_progress_events_come_before_the_text_when_asked(
    serve: Callable[..., LiveServer], make_image: Callable[..., bytes],
) -> None:
    server = serve()
    unseen = data_uri(make_image(41, 29))  # an image no other test evaluated: no prefix reused, every stage runs
    events = sse_events(server, unseen, include_progress=True, include_usage=True)

    kinds = [kind for kind, _ in events]
    first_text = next(index for index, (kind, data) in enumerate(events)
                      if kind == "message" and data["choices"] and data["choices"][0]["delta"].get("content"))
    progress = [data for kind, data in events if kind == "progress"]
    assert "progress" not in kinds[first_text:]
    assert {data["stage"] for data in progress} == {"encode", "prefill"}
    assert all(set(data) == {"stage", "done", "total", "elapsed_s", "eta_s"} for data in progress)
    prefill = [data for data in progress if data["stage"] == "prefill"]
    assert prefill[-1]["done"] == prefill[-1]["total"] > 576 and prefill[-1]["eta_s"] == 0


def test_without_the_flag_the_stream_is_plain_openai(serve: Callable[..., LiveServer], png: str) -> None:
    server = serve()

    assert {kind for kind, _ in sse_events(server, png, include_usage=True)} == {"message"}
    assert {kind for kind, _ in sse_events(server, png)} == {"message"}


def test_the_official_client_streams_every_chunk_it_is_sent(serve: Callable[..., LiveServer], png: str) -> None:
    """Chunks the openai client cannot parse would reach the caller as empty objects: the stream must carry
    none (progress only comes when asked for), and the text must be the whole answer."""
    server = serve()
    client = openai.OpenAI(base_url=f"{server.http}/v1", api_key="x")
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "Describe."},
                                                  {"type": "image_url", "image_url": {"url": png}}]}]
    whole = client.chat.completions.create(model="llava", messages=messages, max_tokens=6, temperature=0)
    chunks = list(client.chat.completions.create(model="llava", messages=messages, max_tokens=6, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))

    assert all(chunk.object == "chat.completion.chunk" and (chunk.choices or chunk.usage) for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == \
        whole.choices[0].message.content


@pytest.mark.parametrize(("host", "url"), [("127.0.0.1", "http://127.0.0.1:8765/"), ("0.0.0.0", "http://localhost:8765/"),
                                           ("::1", "http://[::1]:8765/"), ("[::]", "http://localhost:8765/")])
def test_the_page_url_opens_on_this_machine(host: str, url: str) -> None:
    assert page_url(ServerSettings(host=host)) == url


@pytest.mark.slow
def test_serve_prints_the_page_url(serve_process: Callable[..., ServeProcess]) -> None:
    server = serve_process()

    assert f"captioning page: http://127.0.0.1:{server.port}/ (open it in a browser)" in server.output
    assert httpx.get(f"{server.http}/", headers=HTML).headers["content-type"].startswith("text/html")
