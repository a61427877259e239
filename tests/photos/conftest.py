"""Fixtures for the photos wing (helpers in ``support.photos`` and ``support.tools``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.photos import SUFFIX, PhotoFactory, encode
from support.tools import PHOTOS_INSTALL, require_module


@pytest.fixture
def exiv2_installed() -> None:
    require_module("exiv2", PHOTOS_INSTALL)


@pytest.fixture
def heif_installed() -> None:
    require_module("pillow_heif", PHOTOS_INSTALL)


@pytest.fixture
def photo(tmp_path: Path, exiv2_installed: None) -> PhotoFactory:
    """``photo("JPEG", name="kite", **encode_options)`` -> a new file in ``tmp_path``."""

    def make(fmt: str, name: str = "kite", **options: object) -> Path:
        if fmt == "HEIF":
            require_module("pillow_heif", PHOTOS_INSTALL)
        path = tmp_path / (name + SUFFIX[fmt])
        path.write_bytes(encode(fmt, **options))  # type: ignore[arg-type]
        return path

    return make
