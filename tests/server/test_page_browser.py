"""The captioning page in real headless Chromium (Debian's chromium, driven by Playwright), against the real
server on 127.0.0.1 and the tiny synthetic model: captions, progress, follow-ups, Stop, errors, downloads and
the API key, with every request the browser makes recorded (none may leave 127.0.0.1)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from support.browser import RECORD_MUTATIONS, PageLog, chromium
from support.images import data_uri, encode_image
from support.servers import LiveServer, wait_until
from support.slow_prefill import anyres_picture, slow_prefill_captioner

from llava_edge import Captioner, GenerationOptions
from llava_edge.events import PREFILL, Progress, TextDelta
from llava_edge.models.catalog import ModelFiles
from llava_edge.photos.pixels import pixel_hash
from llava_edge.server.settings import ServerSettings

pytestmark = pytest.mark.slow

KEY = "sixteen-char-key-0"
Server = Callable[..., LiveServer]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def greedy(tiny_files: ModelFiles) -> Iterator[Captioner]:
    """The tiny model answering greedily, so the page and the API must give the same text."""
    with Captioner(model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path,
                   generation=GenerationOptions(max_tokens=12, temperature=0.0)) as loaded:
        yield loaded


@pytest.fixture
def server(greedy: Captioner) -> Iterator[Server]:
    started: list[LiveServer] = []

    def start(**settings: Any) -> LiveServer:
        started.append(LiveServer(greedy, ServerSettings(**settings)))
        return started[-1]

    yield start
    for each in started:
        each.stop()


class Tab:
    """One page in its own browser context, with everything it did logged."""

    def __init__(self, browser: Any, url: str, **context: Any) -> None:
        self.context = browser.new_context(accept_downloads=True, **context)
        self.log = PageLog.attach(self.context)
        self.page = self.context.new_page()
        self.page.add_init_script(RECORD_MUTATIONS)
        self.page.goto(url)

    def add(self, *paths: Path) -> None:
        self.page.set_input_files("#files", [str(path) for path in paths])

    def card(self, name: str) -> Any:
        return self.page.locator("li.card", has=self.page.locator(".name", has_text=name))

    def wait_done(self, name: str, turns: int = 1) -> Any:
        card = self.card(name)
        card.locator(".meta").nth(turns - 1).wait_for(state="visible", timeout=30_000)
        return card

    def changes(self) -> list[tuple[str, str]]:
        return [tuple(change) for change in self.page.evaluate("window.__changes")]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Callable[..., Tab]]:
    opened: list[Tab] = []

    def open_tab(server: LiveServer, **context: Any) -> Tab:
        opened.append(Tab(browser, f"{server.http}/", **context))
        return opened[-1]

    yield open_tab
    for each in opened:
        assert each.log.off_loopback() == []  # no request left 127.0.0.1, in any test
        assert each.log.policy_violations() == [] and each.log.dialogs == []
        each.close()


def picture(tmp_path: Path, name: str, width: int = 80, height: int = 60) -> Path:
    path = tmp_path / name
    path.write_bytes(encode_image(width, height))
    return path


def api_answer(server: LiveServer, messages: list[dict[str, Any]], key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(f"{server.http}/v1/chat/completions", json={"model": "llava", "messages": messages},
                        headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["choices"][0]["message"]["content"])


def first_message(prompt: str, path: Path, detail: str = "auto") -> dict[str, Any]:
    image = {"url": data_uri(path.read_bytes()), "detail": detail}
    return {"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": image}]}


def test_an_image_gets_the_greedy_caption_the_api_gives(server: Server, tab: Callable[..., Tab],
                                                         tmp_path: Path) -> None:
    live = server()
    view = tab(live)
    image = picture(tmp_path, "garden.png")
    view.add(image)
    card = view.wait_done("garden.png")

    shown = card.locator(".answer").first.text_content()
    prompt = view.page.input_value("#prompt")
    assert shown and shown == api_answer(live, [first_message(prompt, image)])
    assert card.locator(".stage").text_content().startswith("Done")
    meta = card.locator(".meta").first.text_content()
    model = re.escape(live.service.captioner.model_name)
    pattern = rf"{model} · first token \d+\.\d\d s · \d+\.\d\d s in all · \d+ tokens"
    assert re.fullmatch(pattern, meta or ""), meta
    assert card.locator(".answer").first.get_attribute("aria-live") == "polite"


def test_progress_shows_before_the_caption(server: Server, tab: Callable[..., Tab], tmp_path: Path) -> None:
    view = tab(server())
    view.add(picture(tmp_path, "wide.png", 700, 500))
    view.wait_done("wide.png")

    changes = view.changes()
    first_text = next(index for index, (kind, text) in enumerate(changes) if kind == "answer" and text)
    stages = [text for kind, text in changes[:first_text] if kind == "stage"]
    assert any(re.search(r"Tile \d of \d encoded", text) for text in stages), stages
    assert any(re.search(r"prefill [\d,]+ of [\d,]+ tokens", text) for text in stages), stages
    assert ("stage", "Generating") in changes[first_text - 1:]


def test_a_follow_up_is_answered_from_the_cached_image(server: Server, tab: Callable[..., Tab], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    encodes = count_encodes(monkeypatch)
    live = server()
    view = tab(live)
    image = picture(tmp_path, "dog.png", 90, 70)
    view.add(image)
    card = view.wait_done("dog.png")
    assert encodes
    encodes.clear()

    card.locator(".follow-input").fill("What colours stand out?")
    card.locator(".follow-input").press("Enter")
    view.wait_done("dog.png", turns=2)

    assert encodes == []  # the image prefix came from the cache
    answers = card.locator(".answer").all_text_contents()
    assert card.locator(".question").nth(1).text_content() == "What colours stand out?"
    assert re.search(r" · first token \d+\.\d\d s", card.locator(".meta").nth(1).text_content())
    history = [first_message(view.page.input_value("#prompt"), image), {"role": "assistant", "content": answers[0]},
               {"role": "user", "content": "What colours stand out?"}]
    assert answers[1] == api_answer(live, history)


def test_balanced_detail_feeds_640_of_the_high_detail_tokens(server: Server, tab: Callable[..., Tab],
                                                              tmp_path: Path) -> None:
    live = server()
    view = tab(live)
    sent: list[dict[str, Any]] = []
    view.page.on("request", lambda request: sent.append(request.post_data_json)
                 if request.url.endswith("/v1/chat/completions") else None)
    view.page.check("input[name=detail][value=balanced]")
    image = tmp_path / "noise.png"
    pixels = np.random.default_rng(3).integers(0, 256, (672, 672, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(image)
    view.add(image)
    shown = view.wait_done("noise.png").locator(".answer").first.text_content()

    [body] = sent
    assert (body["image_tokens"], body["token_selection"]) == (640, "diverse")
    assert body["messages"][0]["content"][1]["image_url"]["detail"] == "high"  # no API gains a detail value
    message = first_message(view.page.input_value("#prompt"), image, "high")
    balanced = httpx.post(f"{live.http}/v1/chat/completions", timeout=60, json={
        "model": "llava", "messages": [message], "image_tokens": 640, "token_selection": "diverse"}).json()
    assert shown == balanced["choices"][0]["message"]["content"] != api_answer(live, [message])
    [row] = [json.loads(line) for line in download(view, "#download-jsonl").splitlines()]
    assert row["detail"] == "balanced" and row["prompt_tokens"] == balanced["usage"]["prompt_tokens"]


def count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per image the runtime encodes (the real encoder runs; this only counts)."""
    from llava_edge.runtime import engine

    calls: list[int] = []
    real = engine.eval_image

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "eval_image", counted)
    return calls


def test_stop_during_prefill_frees_the_model(browser: Any, tab: Callable[..., Tab], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with slow_prefill_captioner() as slow:
        live = LiveServer(slow, ServerSettings())
        try:
            seen, outcomes = spy_on_chats(live, monkeypatch)
            view = tab(live)
            view.page.check("input[name=detail][value=high]")
            path = tmp_path / "big.png"
            anyres_picture().save(path)
            view.add(path)
            card = view.card("big.png")
            card.locator(".stage", has_text="prefill").wait_for(timeout=30_000)
            card.locator(".stop").click()

            wait_until(lambda: bool(outcomes), timeout=30)
            wait_until(lambda: not httpx.get(f"{live.http}/health").json()["running"], timeout=30)
            assert type(outcomes[0].error).__name__ == "CaptionCancelledError"
            prefill = [event for event in seen if isinstance(event, Progress) and event.stage == PREFILL]
            assert prefill and prefill[-1].done < prefill[-1].total / 2  # stopped early in the prefill
            assert not any(isinstance(event, TextDelta) and event.text for event in seen)
            card.locator(".stage", has_text="Stopped").wait_for()
            assert card.locator(".answer").first.text_content() == "" and card.locator(".retry").is_visible()

            view.page.check("input[name=detail][value=low]")  # the next image is not held up by the stopped one
            view.add(picture(tmp_path, "next.png"))
            assert view.wait_done("next.png").locator(".answer").first.text_content()
        finally:
            live.stop()


def spy_on_chats(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> tuple[list[object], list[Any]]:
    """The events each chat caption reports from the model thread, and the outcomes of every caption."""
    service = live.service
    seen: list[object] = []
    outcomes: list[Any] = []
    real_chat, real_complete = service.resident.run_chat, service.worker.complete

    def chat_now(call: Any, images: Any) -> Any:
        forward = call.on_event

        def record(event: object) -> None:
            seen.append(event)
            forward(event)

        return real_chat(replace(call, on_event=record), images)

    def complete(job: Any, outcome: Any) -> bool:
        outcomes.append(outcome)
        return bool(real_complete(job, outcome))

    monkeypatch.setattr(service.resident, "run_chat", chat_now)
    monkeypatch.setattr(service.worker, "complete", complete)
    return seen, outcomes


def test_a_corrupt_file_gets_its_message_and_the_others_finish(server: Server, tab: Callable[..., Tab],
                                                               tmp_path: Path) -> None:
    view = tab(server())
    broken = tmp_path / "broken.png"
    broken.write_bytes(encode_image(80, 60)[:200])
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as sparse:
        sparse.truncate(21 * 2**20)
    view.add(picture(tmp_path, "first.png"), broken, huge, picture(tmp_path, "last.png", 60, 80))

    for name in ("first.png", "last.png"):
        assert view.wait_done(name).locator(".answer").first.text_content()
    error = view.card("broken.png").locator(".error")
    error.wait_for()
    assert "corrupt" in (error.text_content() or "") and "export it again" in (error.text_content() or "")
    assert error.get_attribute("role") == "alert"
    too_large = view.card("huge.jpg").locator(".error").text_content() or ""
    assert "21.0 MB" in too_large and "up to 20 MB" in too_large and "smaller copy" in too_large
    chats = [url for url in view.log.requests if url.endswith("/v1/chat/completions")]
    assert len(chats) == 3  # the oversized file was never sent


def test_a_file_name_is_text_never_html(server: Server, tab: Callable[..., Tab], tmp_path: Path) -> None:
    view = tab(server())
    name = "<img src=x onerror=alert(1)>.png"
    view.add(picture(tmp_path, name))
    card = view.wait_done(name)

    assert card.locator(".name").text_content() == name
    assert view.page.locator("img[src='x']").count() == 0  # the tab's teardown also checks no alert() ran


def test_results_are_copied_and_downloaded_as_jsonl_csv_and_xmp(server: Server, tab: Callable[..., Tab],
                                                                 tmp_path: Path) -> None:
    live = server()
    view = tab(live, permissions=["clipboard-read", "clipboard-write"])
    image = picture(tmp_path, "beach.png")
    view.add(image)
    caption = view.wait_done("beach.png").locator(".answer").first.text_content()
    view.card("beach.png").locator(".copy").click()
    view.card("beach.png").locator(".copy", has_text="Copied").wait_for()
    assert view.page.evaluate("navigator.clipboard.readText()") == caption

    rows = [json.loads(line) for line in download(view, "#download-jsonl").splitlines()]
    assert [(row["file_name"], row["caption"], row["model"], row["turn"]) for row in rows] == [
        ("beach.png", caption, live.service.captioner.model_name, 1)]
    assert rows[0]["prompt"] == view.page.input_value("#prompt") and rows[0]["first_token_s"] > 0
    assert rows[0]["total_s"] >= rows[0]["first_token_s"] and rows[0]["completion_tokens"] > 0
    table = list(csv.DictReader(io.StringIO(download(view, "#download-csv"))))
    assert [(row["file_name"], row["caption"]) for row in table] == [("beach.png", caption)]

    with view.page.expect_download() as started:
        view.card("beach.png").locator(".xmp").click()
    assert started.value.suggested_filename == "beach.png.xmp"
    packet = Path(started.value.path()).read_text()
    assert "<dc:description>" in packet and pixel_hash(image.read_bytes()) in packet
    assert f"<llavaedge:model>{live.service.captioner.model_name}</llavaedge:model>" in packet


def test_the_csv_download_holds_no_formula(server: Server, tab: Callable[..., Tab], tmp_path: Path) -> None:
    view, names = tab(server()), ["=SUM(1,2).png", "+1.png", "-1.png", "@A1.png", "'q.png", "plain.png"]
    view.page.fill("#prompt", formula := '=HYPERLINK("http://example.invalid")')  # the user's text, like the names
    view.add(*(picture(tmp_path, name) for name in names))
    for name in names:
        view.wait_done(name)
    table = list(csv.DictReader(io.StringIO(download(view, "#download-csv"))))
    assert {row["file_name"] for row in table} == {name if name == "plain.png" else f"'{name}" for name in names}
    assert {(row["prompt"], row["turn"]) for row in table} == {(f"'{formula}", "1")}  # numbers stay as they are


def download(view: Tab, button: str) -> str:
    with view.page.expect_download() as started:
        view.page.click(button)
    return Path(started.value.path()).read_text()


def test_the_page_asks_for_the_key_and_keeps_it_for_the_tab(server: Server, tab: Callable[..., Tab],
                                                            tmp_path: Path) -> None:
    view = tab(server(api_key=KEY))
    dialog = view.page.locator("#key-dialog")
    dialog.wait_for()
    view.page.fill("#key-input", KEY)
    view.page.press("#key-input", "Enter")
    view.add(picture(tmp_path, "keyed.png"))

    assert view.wait_done("keyed.png").locator(".answer").first.text_content()
    assert view.page.evaluate("sessionStorage.getItem('llava-edge-api-key')") == KEY
    assert view.page.evaluate("localStorage.length") == 0


def test_the_page_fits_a_phone_screen(server: Server, tab: Callable[..., Tab], tmp_path: Path) -> None:
    view = tab(server(), viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    view.add(picture(tmp_path, "phone.png"))
    view.wait_done("phone.png")

    assert view.page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    labelled = view.page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
        .filter((field) => field.type !== 'radio' && !field.closest('[hidden]'))
        .every((field) => field.labels && field.labels.length > 0)""")
    assert labelled


def test_choosing_another_installed_model_swaps_it_in(tab: Callable[..., Tab], tiny_files: ModelFiles,
                                                      tmp_path: Path) -> None:
    """With two models installed the page offers a choice; picking the other one loads it before the caption,
    and the page says so."""
    from llava_edge.models.synthetic import build_synthetic_pair
    from llava_edge.runtime.quantize import quantize_gguf

    other = build_synthetic_pair("kquant-small", quantize=quantize_gguf).name
    captioner = Captioner(model_path=tiny_files.model_path, mmproj_path=tiny_files.mmproj_path,
                          generation=GenerationOptions(max_tokens=6, temperature=0.0))
    live = LiveServer(captioner, ServerSettings())
    try:
        view = tab(live)
        selector = view.page.locator("#model")
        selector.wait_for()
        assert other in [option.get_attribute("value") for option in selector.locator("option").all()]
        assert view.page.locator("#server-line").text_content().startswith(f"Model {captioner.model_name},")
        selector.select_option(other)
        view.add(picture(tmp_path, "swap.png"))
        card = view.wait_done("swap.png")

        assert any(kind == "stage" and text.startswith("Loading the model") for kind, text in view.changes())
        assert httpx.get(f"{live.http}/health").json()["model"] == other
        assert card.locator(".meta").first.text_content().startswith(f"{other} · ")  # which model answered
        view.page.locator("#server-line", has_text=f"Model {other},").wait_for()  # the header follows the swap
        assert selector.locator("option:checked").text_content() == f"{other} (loaded)"
    finally:
        live.stop()
        captioner.close()


def test_the_controls_come_in_reading_order_from_the_keyboard(server: Server, tab: Callable[..., Tab]) -> None:
    view = tab(server())
    view.page.locator("#server-line", has_text="running on this machine").wait_for()
    order = []
    for _ in range(5):
        view.page.keyboard.press("Tab")
        order.append(view.page.evaluate("document.activeElement.id || document.activeElement.value"))

    expected = ["preset", "prompt", "auto", "files"]
    if view.page.locator("#model").is_visible():
        expected.insert(3, "model")
    assert order[:len(expected)] == expected


def test_presets_fill_the_prompt_and_own_words_are_kept(server: Server, tab: Callable[..., Tab]) -> None:
    view = tab(server())
    view.page.select_option("#preset", "keywords")
    assert view.page.input_value("#prompt") == "List keywords for this image, separated by commas."
    view.page.select_option("#preset", "alt")
    assert view.page.input_value("#prompt").startswith("Write alt text")

    view.page.fill("#prompt", "Name the animals in this photo.")
    view.page.dispatch_event("#prompt", "input")
    assert view.page.input_value("#preset") == "custom"
