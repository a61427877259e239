"""The package as a user installs it: a lazy public face that never loads llama.cpp for commands that do not
caption, one version, the wings' empty ``__init__`` files, a wheel that carries the model registry, and
modules of at most 400 lines."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from support.cli_probe import run_cli_probe

import llava_edge
from llava_edge.models.catalog import builtin_registry_path, load_registry

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "llava_edge"

@pytest.mark.slow
@pytest.mark.parametrize("args", [("<import>",), ("--help",), ("models",), ("models", "--json"), ("info", "--json")])
def test_commands_that_do_not_caption_never_import_llama_cpp(args: tuple[str, ...]) -> None:
    report = run_cli_probe(*args)

    assert report == {"code": 0, "llama_cpp": False}


@pytest.mark.slow
def test_info_still_reports_the_backend_from_a_child_process() -> None:
    done = subprocess.run([sys.executable, "-m", "llava_edge", "info", "--json"], capture_output=True, text=True,
                          timeout=180, check=True)
    facts = json.loads(done.stdout)

    assert facts["llama_cpp_python"] == version("llama-cpp-python")
    assert isinstance(facts["gpu_offload"], bool) and "system_info" in facts


def test_public_names_load_on_first_use() -> None:
    assert llava_edge.Captioner.__module__ == "llava_edge.api"
    assert llava_edge.caption_many.__module__ == "llava_edge.batch.runner"
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        llava_edge.nothing_here  # noqa: B018


def test_the_version_is_defined_once() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())

    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["hatch"]["version"]["path"] == "llava_edge/_version.py"
    assert llava_edge.__version__ == version("llava-edge")
    mentions = [path for path in PACKAGE.rglob("*.py") if f'"{llava_edge.__version__}"' in path.read_text()]
    assert mentions == [PACKAGE / "_version.py"]


@pytest.mark.parametrize("wing", ["server", "batch", "bench", "models", "runtime"])
def test_subpackage_init_holds_a_docstring_and_no_imports(wing: str) -> None:
    """So that importing a wing whose optional extra is missing reaches that wing's own install hint."""
    tree = ast.parse((PACKAGE / wing / "__init__.py").read_text())

    assert ast.get_docstring(tree)
    assert [type(node).__name__ for node in tree.body] == ["Expr"]


def test_the_registry_lives_at_the_top_of_the_repository_only() -> None:
    assert (REPO / "models.toml").is_file()
    assert not (PACKAGE / "models.toml").exists() and not (PACKAGE / "models" / "models.toml").exists()
    assert builtin_registry_path() == REPO / "models.toml"  # a source checkout or an editable install


@pytest.mark.slow
def test_the_wheel_carries_the_registry_and_the_page_and_finds_them_when_installed(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("llava_edge-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        packaged = archive.read("llava_edge/models/models.toml")
        page = {name: archive.read(f"llava_edge/server/page/{name}") for name in ("index.html", "app.js", "style.css")}
        archive.extractall(tmp_path / "site")
    assert packaged == (REPO / "models.toml").read_bytes()
    assert page == {name: (PACKAGE / "server" / "page" / name).read_bytes() for name in page}  # the browser page

    code = (
        "import json, llava_edge; from llava_edge.models.catalog import builtin_registry_path, load_registry; "
        "print(json.dumps([llava_edge.__file__, str(builtin_registry_path()), list(load_registry().models)]))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                          cwd=tmp_path, env=env)
    module_file, registry_path, variants = json.loads(done.stdout)
    assert module_file.startswith(str(tmp_path / "site"))
    assert registry_path == str(tmp_path / "site" / "llava_edge" / "models" / "models.toml")
    assert variants == list(load_registry().models)


MAX_MODULE_LINES = 400
def _module_lines() -> dict[str, int]:
    return {path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
            for path in PACKAGE.rglob("*.py")}


def test_every_module_is_at_most_400_lines() -> None:
    over = {name: lines for name, lines in _module_lines().items() if lines > MAX_MODULE_LINES}

    assert over == {}, f"split these by responsibility (at most {MAX_MODULE_LINES} lines a module): {over}"
