"""The model registry: the built-in models.toml, a user's registry (argument or environment), and
validation errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llava_edge.errors import RegistryError, UnknownModelError
from llava_edge.models.catalog import REGISTRY_ENV, available_models, load_registry

REVISION = "c30ab8669e9d6b14105d0652a015ad94ad54ef72"
GOOD = f"""
default = "mine"
[aliases]
"runware:1@1" = "mine"
[templates]
plain = "{{image}} {{prompt}}"
[mmproj.proj]
repo = "me/mirror"
revision = "{REVISION}"
file = "mmproj.gguf"
size = 10
[models.mine]
repo = "me/mirror"
revision = "{REVISION}"
file = "model.gguf"
size = 20
sha256 = ""
mmproj = "proj"
template = "plain"
aliases = ["m"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_builtin_registry_pins_every_variant() -> None:
    registry = load_registry()

    assert registry.default == "Q4_K_M"
    assert registry.resolve("runware:150@2").id == registry.resolve("q4").id == registry.resolve(None).id == "Q4_K_M"
    assert available_models() == ["Q3_K_XS", "Q3_K_M", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0"]
    for spec in registry.models.values():
        assert spec.model.repo == spec.mmproj.repo == "cjpais/llava-1.6-mistral-7b-gguf"
        assert spec.model.revision == REVISION and spec.model.file.endswith(f".{spec.id}.gguf")


def test_user_registry_by_argument_and_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD)

    by_argument = load_registry(path)
    monkeypatch.setenv(REGISTRY_ENV, str(path))
    by_environment = load_registry()

    assert by_argument == by_environment
    spec = by_environment.resolve("runware:1@1")
    assert (spec.id, spec.model.repo, spec.model.sha256, spec.template) == ("mine", "me/mirror", "", "{image} {prompt}")
    assert load_registry(path).resolve("M").id == "mine"


def test_unknown_model_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError, match="Known variants: mine; aliases: runware:1@1"):
        load_registry(write(tmp_path, GOOD)).resolve("Q4_K_M")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("sha256 = \"\"", "sha265 = \"\""), r"models\.mine\.sha265 is not a known key"),
        (("[aliases]", "defualt = 1\n[aliases]"), r": defualt is not a known key"),
        (('file = "mmproj.gguf"', 'file = "mmproj.gguf"\nurl = "x"'), r"mmproj\.proj\.url is not a known key"),
        ((f'revision = "{REVISION}"\nfile = "model.gguf"', 'revision = "main"\nfile = "model.gguf"'),
         r"models\.mine\.revision must be a 40-hex commit id, got 'main'"),
        (('repo = "me/mirror"\nrevision', 'revision'), r"mmproj\.proj\.repo is missing"),
        (("size = 20", "size = \"20\""), r"models\.mine\.size must be a positive integer"),
        (('sha256 = ""', 'sha256 = "ABC"'), r"models\.mine\.sha256 must be 64 lowercase hex digits"),
        (('mmproj = "proj"', 'mmproj = "nope"'), r"models\.mine\.mmproj = 'nope' names no \[mmproj\.<name>\] table"),
        (('template = "plain"', 'template = "chatml"'), r"models\.mine\.template = 'chatml'"),
        (('default = "mine"', 'default = "other"'), r"default = 'other' is not one of the \[models\] ids: mine"),
        (('"runware:1@1" = "mine"', '"runware:1@1" = "gone"'), r"aliases\.'runware:1@1' points to 'gone'"),
        (('aliases = ["m"]', 'aliases = "m"'), r"models\.mine\.aliases must be a list of strings"),
    ],
)
def test_a_bad_user_registry_names_the_bad_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))

    with pytest.raises(RegistryError, match=message) as failure:
        load_registry(path)
    assert str(path) in str(failure.value)


def test_unreadable_or_invalid_registry_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="Cannot read model registry"):
        load_registry(tmp_path / "missing.toml")
    with pytest.raises(RegistryError, match="is not valid TOML"):
        load_registry(write(tmp_path, "default = "))
