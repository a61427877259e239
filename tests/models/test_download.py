"""Model management against a loopback hub: download, resume, verify, offline, disk, tokens, auto.

``hub_server.HubServer`` speaks the hub's HEAD/GET/Range protocol and counts every request and
every body byte, so each test asserts what went over the wire, not only what came back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from huggingface_hub import hf_hub_download
from support.cli_probe import run_cli_probe
from support.hub_server import Faults, HubServer

from llava_edge import Captioner, GenerationOptions, download_model
from llava_edge.cli import main
from llava_edge.errors import (
    ChecksumMismatchError,
    DownloadError,
    InsufficientDiskError,
    InsufficientMemoryError,
    ModelNotCachedError,
)
from llava_edge.host import memory
from llava_edge.host.memory import metal_limit_estimate
from llava_edge.models import download, resumable
from llava_edge.models.catalog import ModelFiles, load_registry
from llava_edge.models.resolve import list_variants
from llava_edge.models.selection import choose_auto, memory_required

REPO = "test-org/llava-test"
MIRROR = "mirror-org/llava-mirror"
REVISION = "0123456789abcdef0123456789abcdef01234567"
MODEL = "llava-tiny.Q4_K_M.gguf"
MMPROJ = "mmproj-tiny-f16.gguf"
GiB = 2**30


@pytest.fixture
def hub(tiny_files: ModelFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A loopback hub serving the tiny synthetic pair; HF_ENDPOINT points at it."""
    server = HubServer().start()
    files = {MODEL: tiny_files.model_path.read_bytes(), MMPROJ: tiny_files.mmproj_path.read_bytes()}
    server.add_repo(REPO, REVISION, files)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(resumable, "RETRY_DELAY_S", 0.0)
    yield server
    server.close()


@pytest.fixture
def registry(tmp_path: Path, tiny_files: ModelFiles) -> Path:
    """A user registry: ``tiny-q4`` with published sha256s, ``tiny-nosha`` relying on the hub's LFS hash,
    ``tiny-missing`` naming a file the hub does not have."""
    model, mmproj = tiny_files.model_path.read_bytes(), tiny_files.mmproj_path.read_bytes()
    path = tmp_path / "models.toml"
    path.write_text(
        registry_toml(REPO, default="tiny-q4", mmproj=(MMPROJ, mmproj), variants={
            "tiny-q4": (MODEL, model, True), "tiny-nosha": (MODEL, model, False),
            "tiny-missing": ("no-such-file.gguf", model, True),
        })
    )
    return path


def registry_toml(repo: str, *, default: str, mmproj: tuple[str, bytes],
                  variants: dict[str, tuple[str, bytes, bool]]) -> str:
    """A models.toml whose files live in ``repo`` at REVISION; ``bool`` = publish the sha256."""
    def hub_file(name: str, data: bytes, with_sha: bool) -> str:
        sha = hashlib.sha256(data).hexdigest() if with_sha else ""
        return f'repo = "{repo}"\nrevision = "{REVISION}"\nfile = "{name}"\nsize = {len(data)}\nsha256 = "{sha}"\n'

    text = f'default = "{default}"\n[templates]\nmistral-instruct = "[INST] {{image}}\\n{{prompt}} [/INST]"\n'
    text += "[mmproj.tiny]\n" + hub_file(*mmproj, True)
    for variant, (name, data, with_sha) in variants.items():
        text += f'[models."{variant}"]\n' + hub_file(name, data, with_sha)
        text += 'mmproj = "tiny"\ntemplate = "mistral-instruct"\n'
    return text


def snapshot(name: str, repo: str = REPO) -> Path:
    return hf_cache() / f"models--{repo.replace('/', '--')}" / "snapshots" / REVISION / name


def hf_cache() -> Path:
    return Path(os.environ["HF_HOME"]) / "hub"


def blob_part(data: bytes, repo: str = REPO) -> Path:
    return hf_cache() / f"models--{repo.replace('/', '--')}" / "blobs" / f"{hashlib.sha256(data).hexdigest()}.part"


# --- fresh download --------------------------------------------------------------------------------


def test_fresh_download_is_verified_cached_and_captions(
    hub: HubServer, registry: Path, tiny_files: ModelFiles, make_image
) -> None:
    with Captioner("tiny-q4", registry=registry, generation=GenerationOptions(max_tokens=6, seed=1)) as captioner:
        response = captioner.caption(make_image(32, 32))
        files = captioner.files

    assert response["taskType"] == "imageCaption" and response["text"].strip()
    assert files.model_path == snapshot(MODEL) and files.mmproj_path == snapshot(MMPROJ)
    for path, source in ((files.model_path, tiny_files.model_path), (files.mmproj_path, tiny_files.mmproj_path)):
        assert path.is_symlink() and path.resolve().name == hashlib.sha256(source.read_bytes()).hexdigest()
        assert path.read_bytes() == source.read_bytes()
    assert [r.method for r in hub.file_requests()] == ["HEAD", "HEAD", "GET", "GET"]
    assert all(r.range is None for r in hub.file_requests("GET"))
    assert hub.bytes_sent == {
        MODEL: tiny_files.model_path.stat().st_size, MMPROJ: tiny_files.mmproj_path.stat().st_size
    }
    assert not list(hf_cache().rglob("*.part"))
    # The standard hub cache layout: huggingface_hub itself finds the files offline.
    assert hf_hub_download(REPO, MODEL, revision=REVISION, cache_dir=hf_cache(), local_files_only=True) == str(
        files.model_path
    )


def test_cached_variant_is_returned_without_any_request(hub: HubServer, registry: Path) -> None:
    first = download_model("tiny-q4", registry=registry)
    hub.reset_counts()

    assert download_model("tiny-q4", registry=registry) == first
    assert hub.requests == []


def test_local_dir_gets_the_exact_file_names(hub: HubServer, registry: Path, tmp_path: Path) -> None:
    target = tmp_path / "models"
    files = download_model("tiny-q4", registry=registry, local_dir=target)

    assert (files.model_path, files.mmproj_path) == (target / MODEL, target / MMPROJ)
    assert sorted(p.name for p in target.iterdir()) == sorted([".cache", MMPROJ, MODEL])
    assert not (hf_cache() / f"models--{REPO.replace('/', '--')}").exists()


# --- resume ----------------------------------------------------------------------------------------


def test_cut_connection_then_next_call_transfers_only_the_rest(
    hub: HubServer, registry: Path, tiny_files: ModelFiles
) -> None:
    data = tiny_files.model_path.read_bytes()
    cut = 200_000
    hub.faults[MODEL] = Faults(cut_at=cut, cut_times=10)  # the link keeps dying at the same byte

    with pytest.raises(DownloadError, match="again to resume") as failure:
        download_model("tiny-q4", registry=registry)
    assert f"{cut} of {len(data)} bytes are kept" in str(failure.value)
    assert blob_part(data).read_bytes() == data[:cut]
    assert not snapshot(MODEL).exists()

    hub.faults.clear()
    hub.reset_counts()
    files = download_model("tiny-q4", registry=registry)

    assert hub.get_ranges(MODEL) == [f"bytes={cut}-"]
    assert hub.bytes_sent[MODEL] == len(data) - cut
    assert files.model_path.read_bytes() == data
    assert not blob_part(data).exists()


def test_a_single_cut_is_resumed_within_the_same_call(
    hub: HubServer, registry: Path, tiny_files: ModelFiles
) -> None:
    data = tiny_files.model_path.read_bytes()
    hub.faults[MODEL] = Faults(cut_at=150_000, cut_times=1)

    files = download_model("tiny-q4", registry=registry)

    assert hub.get_ranges(MODEL) == [None, "bytes=150000-"]
    assert hub.bytes_sent[MODEL] == len(data)
    assert files.model_path.read_bytes() == data


@pytest.mark.slow
def test_killed_process_is_resumed_by_the_next_process(
    hub: HubServer, registry: Path, tiny_files: ModelFiles
) -> None:
    data = tiny_files.model_path.read_bytes()
    stall = 250_000
    hub.faults[MODEL] = Faults(stall_at=stall)
    code = ("import sys; from llava_edge.models.download import download_model; "
            "download_model('tiny-q4', registry=sys.argv[1])")
    child = subprocess.Popen([sys.executable, "-c", code, str(registry)])
    try:
        part = blob_part(data)
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size == stall):
            assert child.poll() is None and time.monotonic() < deadline, "the child never reached the stall"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # no cleanup, no finally: like a power cut
        child.wait()
    finally:
        child.kill()
    hub.faults.clear()  # the stalled response stays stalled; new ones are healthy
    hub.reset_counts()

    files = download_model("tiny-q4", registry=registry)

    assert hub.get_ranges(MODEL) == [f"bytes={stall}-"]
    assert hub.bytes_sent[MODEL] == len(data) - stall
    assert files.model_path.read_bytes() == data


@pytest.mark.slow
def test_a_disk_that_fills_up_leaves_no_file_taken_for_a_good_one(
    hub: HubServer, registry: Path, tiny_files: ModelFiles
) -> None:
    """The child may write at most 300,000 bytes per file (RLIMIT_FSIZE: writes past it fail like a full
    disk). The download fails with a clear error, nothing is placed, and the next call resumes and verifies."""
    data = tiny_files.model_path.read_bytes()
    limit = 300_000
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from llava_edge.models.download import download_model\n"
        "from llava_edge.errors import DownloadError\n"
        "try:\n"
        "    download_model('tiny-q4', registry=sys.argv[1])\n"
        "except DownloadError as err:\n"
        "    print('DownloadError:', err)\n"
        "    sys.exit(3)\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(registry)], check=False, capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == 3, child.stdout + child.stderr
    assert "DownloadError:" in child.stdout
    assert not snapshot(MODEL).exists() and not blob_part(data).with_suffix("").exists()
    assert blob_part(data).stat().st_size <= limit  # the partial file is kept only as a .part

    hub.reset_counts()
    files = download_model("tiny-q4", registry=registry)
    assert files.model_path.read_bytes() == data
    assert hub.bytes_sent[MODEL] < len(data)  # resumed from what the full disk had taken


# --- verification ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["tiny-q4", "tiny-nosha"])
def test_corrupt_download_is_rejected_and_nothing_usable_is_left(
    hub: HubServer, registry: Path, tiny_files: ModelFiles, variant: str
) -> None:
    """Rejected against the registry's sha256, or against the hub's LFS hash when the registry has none."""
    data = tiny_files.model_path.read_bytes()
    hub.faults[MODEL] = Faults(corrupt=True)

    with pytest.raises(ChecksumMismatchError) as failure:
        download_model(variant, registry=registry)

    message = str(failure.value)
    assert "corrupt" in message and hashlib.sha256(data).hexdigest() in message
    assert f"llava-edge pull {variant} --registry {registry}" in message
    blob = blob_part(data).with_suffix("")
    assert not snapshot(MODEL).exists() and not blob.exists() and not blob_part(data).exists()

    hub.faults.clear()
    assert download_model(variant, registry=registry).model_path.read_bytes() == data


def test_pull_replaces_a_poisoned_cached_blob(hub: HubServer, registry: Path, tiny_files: ModelFiles) -> None:
    """hf_hub_download never hashes; a blob with wrong bytes is re-fetched by a verifying pull."""
    files = download_model("tiny-q4", registry=registry)
    blob = files.model_path.resolve()
    blob.write_bytes(b"\0" * blob.stat().st_size)
    hub.reset_counts()

    repaired = download_model("tiny-q4", registry=registry, verify_cached=True)

    assert repaired.model_path.read_bytes() == tiny_files.model_path.read_bytes()
    assert [(r.method, r.file) for r in hub.file_requests()] == [("HEAD", MODEL), ("GET", MODEL)]


def test_a_second_pull_never_moves_a_placed_blob_another_process_may_be_loading(
    hub: HubServer, registry: Path, tiny_files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Process A placed the blob and has it open (llama.cpp mmaps it) but has not linked the snapshot yet;
    process B pulls the same variant. The blob must stay where it is, the same inode, untouched."""
    data = tiny_files.model_path.read_bytes()
    blob = download_model("tiny-q4", registry=registry).model_path.resolve()
    snapshot(MODEL).unlink()  # what A leaves between placing the blob and linking it
    seen: list[bool] = []
    real_fetch = download.fetch_part

    def watching_fetch(*args: Any, **kwargs: Any) -> resumable.PartFile:
        seen.append(blob.exists())  # where A would open it, at the moment B transfers
        return real_fetch(*args, **kwargs)

    monkeypatch.setattr(download, "fetch_part", watching_fetch)
    hub.reset_counts()
    with open(blob, "rb") as held:
        placed = os.fstat(held.fileno())
        again = download_model("tiny-q4", registry=registry)
        assert held.read() == data

    assert seen == [] and hub.file_requests("GET") == []  # verified where it lies; nothing fetched
    after = os.stat(blob)
    assert (after.st_ino, after.st_mtime_ns) == (placed.st_ino, placed.st_mtime_ns) and blob.read_bytes() == data
    assert again.model_path == snapshot(MODEL) and again.model_path.resolve() == blob
    assert not list(hf_cache().rglob("*.part"))


def test_an_incomplete_placed_blob_is_replaced_atomically(
    hub: HubServer, registry: Path, tiny_files: ModelFiles
) -> None:
    """A wrong blob is never truncated or rewritten in place: the good file goes to a .part and replaces it,
    so a reader of the old one keeps reading what it opened."""
    data = tiny_files.model_path.read_bytes()
    blob = download_model("tiny-q4", registry=registry).model_path.resolve()
    snapshot(MODEL).unlink()
    blob.unlink()
    blob.write_bytes(data[:1000])
    hub.reset_counts()
    with open(blob, "rb") as held:
        old = os.fstat(held.fileno())
        files = download_model("tiny-q4", registry=registry)
        assert held.read() == data[:1000]

    assert hub.get_ranges(MODEL) == [None] and files.model_path.read_bytes() == data
    assert os.stat(blob).st_ino != old.st_ino and not blob_part(data).exists()


def test_hub_and_registry_disagreeing_on_the_hash_fails_before_downloading(
    hub: HubServer, tmp_path: Path, tiny_files: ModelFiles
) -> None:
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(registry_toml(REPO, default="x", mmproj=(MMPROJ, tiny_files.mmproj_path.read_bytes()),
                                   variants={"x": (MODEL, b"other bytes", True)}))

    with pytest.raises(ChecksumMismatchError, match="registry pins"):
        download_model("x", registry=wrong)
    assert hub.file_requests("GET") == []


# --- errors ----------------------------------------------------------------------------------------


def test_missing_file_gives_a_clear_error(hub: HubServer, registry: Path) -> None:
    with pytest.raises(DownloadError, match=r"no file test-org/llava-test/no-such-file\.gguf.*404") as failure:
        download_model("tiny-missing", registry=registry)
    assert "tiny-missing" in str(failure.value)
    assert hub.file_requests("GET") == []


def test_unreachable_hub_gives_a_clear_error(registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(DownloadError, match=r"Cannot reach http://127\.0\.0\.1:9.*HF_HUB_OFFLINE=1"):
        download_model("tiny-q4", registry=registry)


def test_not_enough_disk_fails_before_any_transfer(hub: HubServer, registry: Path) -> None:
    hub.faults[MODEL] = Faults(advertised_size=10**16)  # 10 PB

    with pytest.raises(InsufficientDiskError, match=re.escape("Not enough disk space for tiny-q4: 10000000.00 GB")):
        download_model("tiny-q4", registry=registry)
    assert hub.file_requests("GET") == []


def test_token_passes_through_to_a_private_repo(hub: HubServer, tiny_files: ModelFiles, tmp_path: Path) -> None:
    hub.add_repo(MIRROR, REVISION, hub.repos[REPO].files, token="hf_private_token")
    private = tmp_path / "private.toml"
    private.write_text(registry_toml(MIRROR, default="p", mmproj=(MMPROJ, tiny_files.mmproj_path.read_bytes()),
                                     variants={"p": (MODEL, tiny_files.model_path.read_bytes(), True)}))

    with pytest.raises(DownloadError, match="private and no valid token"):
        download_model("p", registry=private, token=False)
    hub.reset_counts()
    download_model("p", registry=private, token="hf_private_token")

    assert {r.authorization for r in hub.file_requests()} == {"Bearer hf_private_token"}
    assert [r.method for r in hub.file_requests()] == ["HEAD", "HEAD", "GET", "GET"]


def test_user_registry_from_the_environment_downloads_from_a_mirror(
    hub: HubServer, tiny_files: ModelFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo(MIRROR, REVISION, hub.repos[REPO].files)
    mirror = tmp_path / "mirror.toml"
    mirror.write_text(registry_toml(MIRROR, default="m", mmproj=(MMPROJ, tiny_files.mmproj_path.read_bytes()),
                                    variants={"m": (MODEL, tiny_files.model_path.read_bytes(), True)}))
    monkeypatch.setenv("LLAVA_EDGE_MODELS", str(mirror))

    files = download_model()

    assert files.name == "m" and files.model_path == snapshot(MODEL, MIRROR)
    assert {r.path.split("/resolve/")[0] for r in hub.file_requests()} == {f"/{MIRROR}"}


# --- offline ---------------------------------------------------------------------------------------


def test_offline_with_cached_files_sends_no_request(
    hub: HubServer, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    online = download_model("tiny-q4", registry=registry)
    hub.reset_counts()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert download_model("tiny-q4", registry=registry) == online
    assert hub.requests == []


def test_offline_without_cached_files_names_the_pull_command(hub: HubServer, registry: Path) -> None:
    with pytest.raises(ModelNotCachedError) as failure:
        download_model("tiny-q4", registry=registry, offline=True)

    assert f"Run `llava-edge pull tiny-q4 --registry {registry}` while online" in str(failure.value)
    assert hub.requests == []


# --- progress --------------------------------------------------------------------------------------


def test_progress_bar_only_when_asked_or_on_a_terminal(
    hub: HubServer, registry: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    download_model("tiny-q4", registry=registry)  # stdout/stderr are not terminals here
    assert capsys.readouterr().err == ""

    download_model("tiny-q4", registry=registry, local_dir=tmp_path / "d", progress=True)
    drawn = capsys.readouterr().err
    assert MODEL in drawn and MMPROJ in drawn and "100%" in drawn


# --- auto ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("available", "total", "expected"),
    [
        (8 * GiB, 8 * GiB, "Q4_K_M"),  # 8 GB, "available" reported as total RAM: the share of total decides
        (int(7.3 * GiB), int(7.86 * GiB), "Q4_K_M"),  # 8 GB Raspberry Pi 5, headless
        (int(5.5 * GiB), int(7.86 * GiB), "Q3_K_XS"),  # the same Pi with a browser open
        (14 * GiB, 16 * GiB, "Q8_0"),
        (64 * GiB, 64 * GiB, "Q8_0"),
    ],
)
def test_auto_picks_the_largest_variant_that_fits(
    monkeypatch: pytest.MonkeyPatch, available: int, total: int, expected: str
) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: available)
    monkeypatch.setattr(memory, "total_memory", lambda: total)
    monkeypatch.setattr(memory, "metal_working_set_limit", lambda: None)

    assert choose_auto(load_registry()).id == expected


@pytest.mark.parametrize(("ram_gib", "expected"), [(8, "Q3_K_M"), (16, "Q8_0")])
def test_auto_keeps_the_model_within_metals_working_set_on_a_mac(ram_gib: int, expected: str) -> None:
    """An 8 GB Mac: Metal keeps about 5.3 GiB on the GPU, so Q4_K_M (5.7 GiB with its KV cache) would spill."""
    ram = ram_gib * GiB
    assert choose_auto(load_registry(), available=ram, total=ram, gpu_limit=metal_limit_estimate(ram)).id == expected


def test_auto_on_a_machine_too_small_says_what_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: 3 * GiB)
    monkeypatch.setattr(memory, "total_memory", lambda: 4 * GiB)
    monkeypatch.setattr(memory, "metal_working_set_limit", lambda: None)

    with pytest.raises(InsufficientMemoryError) as failure:
        download_model("auto", offline=True)
    message = str(failure.value)
    assert "smallest, Q3_K_XS, needs about 4.4 GiB at n_ctx 4096" in message
    assert "3.0 GiB available of 4.0 GiB" in message


def test_auto_resolves_through_download_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GiB)
    monkeypatch.setattr(memory, "total_memory", lambda: 8 * GiB)
    monkeypatch.setattr(memory, "metal_working_set_limit", lambda: None)

    with pytest.raises(ModelNotCachedError, match="Run `llava-edge pull Q4_K_M`"):
        download_model("auto", offline=True)


def test_memory_need_formula() -> None:
    spec = load_registry().resolve("Q4_K_M")
    assert memory_required(spec) == 4_370_000_000 + 624_000_000 + 512 * 2**20 + 512 * 2**20


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_pull_then_models_shows_it_downloaded(hub: HubServer, registry: Path) -> None:
    runner = CliRunner()
    before = json.loads(runner.invoke(main, ["models", "--json", "--registry", str(registry)]).output)
    pulled = runner.invoke(main, ["pull", "tiny-q4", "--registry", str(registry)])
    after = json.loads(runner.invoke(main, ["models", "--json", "--registry", str(registry)]).output)

    assert pulled.exit_code == 0, pulled.output
    assert str(snapshot(MODEL)) in pulled.output and str(snapshot(MMPROJ)) in pulled.output
    assert [(row["id"], row["downloaded"], row["default"]) for row in before] == [
        ("tiny-q4", False, True), ("tiny-nosha", False, False), ("tiny-missing", False, False)
    ]
    assert [row["downloaded"] for row in after] == [True, True, False]  # tiny-nosha shares both files
    assert after[0]["size_bytes"] == sum(p.stat().st_size for p in (snapshot(MODEL), snapshot(MMPROJ)))


def test_cli_pull_then_caption_offline_with_the_default_variant(
    hub: HubServer, registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_image
) -> None:
    """The issue's "done when" path (`llava-edge pull`, then `llava-edge caption photo.jpg`) on the loopback hub."""
    monkeypatch.setenv("LLAVA_EDGE_MODELS", str(registry))
    photo = tmp_path / "photo.png"
    photo.write_bytes(make_image(40, 30))
    runner = CliRunner()

    pulled = runner.invoke(main, ["pull"])
    hub.reset_counts()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    captioned = runner.invoke(main, ["caption", str(photo), "--max-tokens", "5", "--seed", "3"])

    assert pulled.exit_code == 0, pulled.output
    assert captioned.exit_code == 0, captioned.output
    assert captioned.output.strip()
    assert hub.requests == []


def test_cli_pull_error_exits_1_with_the_message(hub: HubServer, registry: Path) -> None:
    result = CliRunner().invoke(main, ["pull", "tiny-missing", "--registry", str(registry)])

    assert result.exit_code == 1
    assert "404 Entry Not Found" in result.output and "[modelUnavailable]" in result.output


def test_cli_models_table_lists_every_builtin_variant() -> None:
    result = CliRunner().invoke(main, ["models"])

    assert result.exit_code == 0, result.output
    rows = result.output.strip().splitlines()
    assert [row.split()[0].lstrip("*") for row in rows[1:]] == list(load_registry().models)
    assert "Q4_K_M" in next(row for row in rows if "default" in row)


def test_list_variants_marks_default_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda: 8 * GiB)
    monkeypatch.setattr(memory, "total_memory", lambda: 8 * GiB)
    monkeypatch.setattr(memory, "metal_working_set_limit", lambda: None)

    rows = {row.id: row for row in list_variants()}

    assert rows["Q4_K_M"].default and rows["Q4_K_M"].auto and "runware:150@2" in rows["Q4_K_M"].aliases
    assert not any(row.downloaded for row in rows.values())
    assert rows["Q8_0"].memory_bytes > rows["Q3_K_XS"].memory_bytes


@pytest.mark.slow
def test_cli_pull_never_imports_llama_cpp(hub: HubServer, registry: Path) -> None:
    """A broken or missing llama-cpp-python build cannot stop a download."""
    report = run_cli_probe("pull", "tiny-q4", "--registry", str(registry), "--quiet", env={"HF_HUB_OFFLINE": "0"})

    assert report == {"code": 0, "llama_cpp": False}
    assert snapshot(MODEL).is_file() and snapshot(MMPROJ).is_file()
