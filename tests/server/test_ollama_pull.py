"""``POST /api/pull`` against the loopback hub (``support.hub_server``), driven by the official ``ollama``
client: Ollama's progress objects, the verified download into the hub cache, names already installed, and
the refusals (offline, --no-fetch, no key on a LAN bind, unknown names)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from support.hub_server import Faults, HubServer
from support.servers import LiveServer

from llava_edge import Captioner, GenerationOptions
from llava_edge.models import resumable
from llava_edge.models.catalog import ModelFiles
from llava_edge.server.settings import ServerSettings

REPO, REVISION = "test-org/llava-test", "0123456789abcdef0123456789abcdef01234567"
MODEL_FILE, MMPROJ_FILE = "llava-tiny.Q4_K_M.gguf", "mmproj-tiny-f16.gguf"
TAG = "llava:7b-v1.6-mistral-q4_K_M"
KEY = "sixteen-char-key-0"
Server = Callable[..., LiveServer]


@pytest.fixture
def hub(tiny_files: ModelFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """The loopback hub serving the tiny pair as the files of variant Q4_K_M; HF_ENDPOINT points at it."""
    server = HubServer().start()
    server.add_repo(REPO, REVISION, {MODEL_FILE: tiny_files.model_path.read_bytes(),
                                     MMPROJ_FILE: tiny_files.mmproj_path.read_bytes()})
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(resumable, "RETRY_DELAY_S", 0.0)
    yield server
    server.close()


@pytest.fixture
def registry(tmp_path: Path, tiny_files: ModelFiles) -> Path:
    """A registry whose Q4_K_M variant is the tiny pair on the loopback hub, with published sha256s."""
    def hub_file(name: str, data: bytes) -> str:
        return (f'repo = "{REPO}"\nrevision = "{REVISION}"\nfile = "{name}"\nsize = {len(data)}\n'
                f'sha256 = "{hashlib.sha256(data).hexdigest()}"\n')

    text = 'default = "Q4_K_M"\n[templates]\nmistral-instruct = "[INST] {image}\\n{prompt} [/INST]"\n'
    text += "[mmproj.tiny]\n" + hub_file(MMPROJ_FILE, tiny_files.mmproj_path.read_bytes())
    text += '[models.Q4_K_M]\n' + hub_file(MODEL_FILE, tiny_files.model_path.read_bytes())
    text += 'mmproj = "tiny"\ntemplate = "mistral-instruct"\naliases = ["q4"]\n'
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


@pytest.fixture
def serve(hub: HubServer, registry: Path) -> Iterator[Server]:
    """Servers started on synthetic-tiny with the loopback registry; ``settings`` are ServerSettings fields."""
    started: list[tuple[LiveServer, Captioner]] = []

    def start(**settings: Any) -> LiveServer:
        captioner = Captioner("synthetic-tiny", registry=registry, generation=GenerationOptions(max_tokens=4))
        started.append((LiveServer(captioner, ServerSettings(**settings)), captioner))
        return started[-1][0]

    yield start
    for live, captioner in started:
        live.stop()
        captioner.close()


def test_pull_streams_ollama_progress_and_installs_the_variant(serve: Server, hub: HubServer,
                                                               tiny_files: ModelFiles) -> None:
    server = serve()
    progress = list(ollama.Client(host=server.http).pull(TAG, stream=True))

    statuses = [event.status for event in progress]
    assert statuses[0] == "pulling manifest" and statuses[-3:] == ["verifying sha256 digest", "writing manifest",
                                                                    "success"]
    downloads = [event for event in progress if event.status == "downloading"]
    model_sha = hashlib.sha256(tiny_files.model_path.read_bytes()).hexdigest()
    finished = {event.digest: event.completed for event in downloads if event.completed == event.total}
    assert finished[f"sha256:{model_sha}"] == tiny_files.model_path.stat().st_size
    assert {request.file for request in hub.file_requests("GET")} == {MODEL_FILE, MMPROJ_FILE}
    tags = httpx.get(f"{server.http}/api/tags").json()["models"]
    models = httpx.get(f"{server.http}/v1/models").json()["data"]
    assert [tag["name"] for tag in tags].count(TAG) == 1 and tags[0]["name"] == "synthetic-tiny"
    pulled = next(model for model in models if model["id"] == "Q4_K_M")
    assert {TAG, "q4"} <= set(pulled["aliases"]) and TAG not in [model["id"] for model in models]


def test_an_installed_name_answers_success_at_once(serve: Server, hub: HubServer) -> None:
    server = serve()
    client = ollama.Client(host=server.http)
    client.pull(TAG)
    hub.requests.clear()

    for name in (TAG, "Q4_K_M", "q4", "llava:7b", "synthetic-tiny"):
        assert client.pull(name, stream=False).status == "success"
    assert hub.requests == []


def test_stream_false_answers_only_the_final_object(serve: Server) -> None:
    server = serve()
    answer = httpx.post(f"{server.http}/api/pull", json={"model": "Q4_K_M", "stream": False}, timeout=60)
    assert answer.status_code == 200 and answer.json() == {"status": "success"}


def test_unknown_and_synthetic_names_say_what_to_do(serve: Server, hub: HubServer) -> None:
    client = ollama.Client(host=serve().http)
    with pytest.raises(ollama.ResponseError) as unknown:
        client.pull("hf.co/evil/model:Q4_K_M")
    assert unknown.value.status_code == 404 and f"Pull one of: {TAG} (Q4_K_M)" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as synthetic:
        client.pull("synthetic-kquant-small-not-built")
    assert "llava-edge serve --model" in synthetic.value.error
    assert hub.requests == []  # only the registry's hub is ever asked, and only for a registry variant


@pytest.mark.parametrize("settings", [{"offline": True}, {"fetch_hosts": frozenset()}],
                         ids=["offline", "no-fetch"])
def test_offline_and_no_fetch_servers_refuse_naming_the_command(serve: Server, hub: HubServer,
                                                                settings: dict[str, Any]) -> None:
    server = serve(**settings)
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.http).pull(TAG)
    assert refused.value.status_code == 403 and "`llava-edge pull VARIANT`" in refused.value.error
    assert hub.requests == []


def test_pull_needs_the_key_and_on_a_lan_bind_without_one_allow_pull(serve: Server) -> None:
    keyed = serve(api_key=KEY)
    with pytest.raises(ollama.ResponseError) as missing:
        ollama.Client(host=keyed.http).pull(TAG)
    assert missing.value.status_code == 401
    with_key = ollama.Client(host=keyed.http, headers={"Authorization": f"Bearer {KEY}"})
    assert with_key.pull("llava", stream=False).status == "success"

    lan = serve(host="0.0.0.0", no_auth=True)
    with pytest.raises(ollama.ResponseError, match="--allow-pull") as refused:
        ollama.Client(host=lan.http).pull(TAG)
    assert refused.value.status_code == 403
    allowed = serve(host="0.0.0.0", no_auth=True, allow_pull=True)
    assert ollama.Client(host=allowed.http).pull(TAG, stream=False).status == "success"


def test_a_corrupt_download_is_an_error_and_installs_nothing(serve: Server, hub: HubServer) -> None:
    hub.faults[MODEL_FILE] = Faults(corrupt=True)
    server = serve()
    with pytest.raises(ollama.ResponseError, match="corrupt"):
        list(ollama.Client(host=server.http).pull(TAG, stream=True))
    failed = httpx.post(f"{server.http}/api/pull", json={"model": TAG, "stream": False}, timeout=60)
    assert failed.status_code == 500 and "corrupt" in failed.json()["error"]
    assert TAG not in [tag["name"] for tag in httpx.get(f"{server.http}/api/tags").json()["models"]]


def test_embeddings_are_an_ollama_error(serve: Server) -> None:
    client = ollama.Client(host=serve().http)
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model="llava", input="a house")
    assert refused.value.status_code == 501 and "has no embeddings" in refused.value.error


def test_a_stalled_pull_holds_neither_the_chat_routes_nor_a_second_download(serve: Server, hub: HubServer) -> None:
    """Downloads run in the server's one download thread: clients that give up on stalled pulls leave the
    threads requests are parsed on free, and a pull asked for meanwhile is told to come back."""
    hub.faults[MODEL_FILE] = Faults(stall_at=1024)
    server = serve()
    with pytest.raises(httpx.ReadTimeout):  # the client gives up while the hub holds the file
        httpx.post(f"{server.http}/api/pull", json={"model": TAG}, timeout=0.5)
    busy = [httpx.post(f"{server.http}/api/pull", json={"model": "q4", "stream": False}, timeout=10)
            for _ in range(8)]
    chat = httpx.post(f"{server.http}/v1/chat/completions", timeout=30,
                      json={"model": "llava", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    hub.release.set()
    assert all(answer.status_code == 503 and "being downloaded" in answer.json()["error"] for answer in busy)
    assert chat.status_code == 200
