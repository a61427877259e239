"""The per-image API the ``caption`` command calls: ``already_described`` before captioning an image (so a
rerun skips what is done without running the model), ``write_caption`` after.

``write_caption`` reads and checks the image first (corrupt metadata, a format that cannot be written, a
read-only file), so such an image fails before anything is written. It then writes the dataset files, the XMP
sidecar and, last, the image itself. An error at one target leaves the ones before it written; a rerun with
``if_exists="skip"`` completes the rest.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from llava_edge.errors import InvalidRequestError, LlavaEdgeError, OutputFileError
from llava_edge.photos import dataset_files, embedded, exiv2_io, text_sidecar
from llava_edge.photos.caption_text import Action, IfExists, alt_text_from, check_if_exists, strip_preamble
from llava_edge.photos.embedded import TO_SIDECAR, WITH_IIM, ImageFile
from llava_edge.photos.pixels import pixel_hash
from llava_edge.photos.policy import Existing, plan_update
from llava_edge.photos.sidecar import read_sidecar, sidecar_path, write_sidecar
from llava_edge.photos.targets import PhotoRecord, TargetResult, Targets, TextOptions
from llava_edge.photos.xmp_packet import Marker, build_packet, xml_safe

_NO_TEXT = TextOptions()


def write_caption(
    image_path: str | os.PathLike[str],
    caption: str,
    keywords: Sequence[str] | None = None,
    *,
    targets: Targets,
    if_exists: IfExists = "skip",
    keep_times: bool = False,
    marker: Marker | None = None,
    alt_text: str | None = None,
    text: TextOptions = _NO_TEXT,
) -> PhotoRecord:
    """Write one image's caption (and keywords) to every target.

    Args:
        image_path: the image; it is read, and written only for ``targets.metadata``.
        caption: the model's caption; ``text.strip_preamble`` drops a stock opener first.
        keywords: for ``dc:subject`` and IPTC ``Keywords``; ``None`` leaves existing keywords alone.
        targets: where to write.
        if_exists: ``skip`` (default) keeps an existing caption, ``overwrite`` replaces it, ``append`` adds ours.
        keep_times: give a rewritten image its original access and modification times.
        marker: model and prompt, written into XMP with the pixels' hash so ``already_described`` can skip.
        alt_text: for ``AltTextAccessibility``; default: the caption's sentences within 250 characters.
        text: prefix/suffix for the dataset targets, and ``strip_preamble``.

    Returns:
        A ``PhotoRecord`` with one ``TargetResult`` per target (a HEIC's ``metadata`` result names its sidecar).

    Raises:
        InvalidRequestError: the caption is empty.
        CorruptMetadataError, UnsupportedMetadataFormatError, ReadOnlyImageError, PhotoMetadataError: the image
            (or its sidecar) cannot be written; the file is left byte-identical.
        OutputFileError: a dataset file is corrupt, or the image is outside the ``metadata.jsonl`` folder.
        InvalidImageError: the image's pixels do not decode (needed for the marker's hash).
        MissingExtraError: XMP targets without the ``photos`` extra.
    """
    if_exists = check_if_exists(if_exists)
    image = Path(image_path)
    caption = _clean(caption, strip=text.strip_preamble)
    if not caption:
        raise InvalidRequestError(f"The caption of {image} is empty; nothing was written.", parameter="text")
    alt = _clean(alt_text) if alt_text else alt_text_from(caption)
    prepared, redirected, content_hash = None, "", ""
    if targets.xmp:
        exiv2_io.module()
        file = ImageFile.read(image)
        opened = embedded.open_metadata(file)
        content_hash = pixel_hash(file.data, name=str(image))
        marker = dataclasses.replace(marker, content_hash=content_hash) if marker is not None else None
        if targets.metadata and opened.kind in TO_SIDECAR:
            redirected = opened.kind
        elif targets.metadata:
            prepared = embedded.prepare(file, opened, caption, keywords=keywords, alt_text=alt, marker=marker,
                                        if_exists=if_exists)
    results = _write_datasets(image, caption, targets, text, if_exists)
    if targets.xmp_sidecar or redirected:
        action = write_sidecar(path := sidecar_path(image, targets.xmp_style), caption, keywords=keywords,
                               alt_text=alt, marker=marker, if_exists=if_exists)
        results += _sidecar_results(path, action, redirected, explicit=targets.xmp_sidecar)
    if prepared is not None:
        embedded.commit(prepared, content_hash=content_hash, keep_times=keep_times)
        results.append(TargetResult("metadata", image, prepared.update.action))
    return PhotoRecord(image, tuple(results), content_hash)


def caption_packet(
    caption: str, keywords: Sequence[str] | None = None, *, alt_text: str | None = None, marker: Marker | None = None
) -> bytes:
    """The XMP packet (a standalone ``.xmp`` file) that ``write_caption`` would write into a new sidecar, built in
    memory, for a download. ``marker.content_hash`` is used as given (``pixels.pixel_hash`` of the image).

    Raises:
        InvalidRequestError: the caption is empty.
    """
    caption = _clean(caption)
    if not caption:
        raise InvalidRequestError("The caption is empty; there is nothing to put into an XMP packet.", parameter="text")
    update = plan_update(Existing(), caption, keywords=keywords, alt_text=_clean(alt_text) if alt_text else
                         alt_text_from(caption), marker=marker, if_exists="skip")
    return build_packet(update.fields)


def already_described(
    image_path: str | os.PathLike[str],
    marker: Marker | None,
    *,
    targets: Targets,
    if_exists: IfExists = "skip",
) -> bool:
    """Whether ``write_caption`` would change nothing for this image, so it need not be captioned at all.

    True when every target is settled: an XMP target (image or sidecar) holds our marker for the same model,
    prompt and pixels, or ``if_exists`` is ``skip`` and it holds a description; a dataset target holds a
    caption for the image and ``if_exists`` is ``skip``. False when no target is asked for, or the image cannot
    be read (captioning will then say why).

    Raises:
        CorruptMetadataError: the image's metadata or its sidecar cannot be parsed (``write_caption`` would fail).
        UnsupportedMetadataFormatError: ``targets.metadata`` for a format that cannot be written.
        OutputFileError: a dataset file is corrupt.
        MissingExtraError: XMP targets without the ``photos`` extra.
    """
    if_exists = check_if_exists(if_exists)
    image = Path(image_path)
    if not targets.any():
        return False
    found: list[Existing | None] = []
    file = None
    if targets.xmp:  # first: an image whose metadata cannot be written fails here, before any captioning
        exiv2_io.module()
        try:
            file = ImageFile.read(image)
        except LlavaEdgeError:
            return False
        opened = embedded.open_metadata(file)
        if targets.metadata and opened.kind in TO_SIDECAR:
            found.append(read_sidecar(sidecar_path(image, targets.xmp_style)))
        elif targets.metadata:
            embedded.check_kind(image, opened.kind)
            found.append(exiv2_io.read_existing(opened, iim=opened.kind in WITH_IIM, exif=True))
        if targets.xmp_sidecar:
            found.append(read_sidecar(sidecar_path(image, targets.xmp_style)))
    if not _datasets_settled(image, targets, if_exists):
        return False
    hashes: list[str] = []

    def current_hash() -> str:
        if not hashes:
            assert file is not None
            hashes.append(pixel_hash(file.data, name=str(image)))
        return hashes[0]

    return all(_xmp_settled(existing, marker, if_exists, current_hash) for existing in found)


def _sidecar_results(path: Path, action: Action, redirected: str, *, explicit: bool) -> list[TargetResult]:
    """One sidecar write reported for each target it served: ``metadata`` of a HEIC/AVIF, ``xmp_sidecar``."""
    results = []
    if redirected:
        detail = (f"{redirected} images cannot take metadata in place without re-encoding; it went to the XMP "
                  f"sidecar {path.name}")
        results.append(TargetResult("metadata", path, action, detail))
    if explicit:
        results.append(TargetResult("xmp_sidecar", path, action))
    return results


def _xmp_settled(
    existing: Existing | None, marker: Marker | None, if_exists: IfExists, current_hash: Callable[[], str]
) -> bool:
    if existing is None:
        return False
    if if_exists == "skip" and existing.caption() is not None:
        return True
    ours = existing.marker
    if marker is None or ours is None or (ours.model, ours.prompt) != (marker.model, marker.prompt):
        return False
    return ours.content_hash == current_hash()


def _datasets_settled(image: Path, targets: Targets, if_exists: IfExists) -> bool:
    if not targets.datasets:
        return True
    if if_exists != "skip":
        return False
    found: list[str | None] = []
    if targets.text_sidecar is not None:
        found.append(text_sidecar.read_text_sidecar(text_sidecar.text_sidecar_path(image, targets.text_sidecar)))
    if targets.metadata_jsonl is not None:
        found.append(dataset_files.read_jsonl_caption(image, targets.metadata_jsonl, targets.jsonl_column))
    if targets.kohya_json is not None:
        found.append(dataset_files.read_kohya_caption(image, targets.kohya_json, targets.kohya_key))
    return all(text is not None and text.strip() for text in found)


def _write_datasets(
    image: Path, caption: str, targets: Targets, text: TextOptions, if_exists: IfExists
) -> list[TargetResult]:
    results = []
    path: Path | None = None
    try:
        if targets.text_sidecar is not None:
            path, action = text_sidecar.write_text_sidecar(image, caption, extension=targets.text_sidecar, text=text,
                                                            if_exists=if_exists)
            results.append(TargetResult("text_sidecar", path, action))
        if targets.metadata_jsonl is not None:
            path = targets.metadata_jsonl
            action = dataset_files.write_jsonl(image, caption, jsonl=path, column=targets.jsonl_column, text=text,
                                               if_exists=if_exists)
            results.append(TargetResult("metadata_jsonl", path, action))
        if targets.kohya_json is not None:
            path = targets.kohya_json
            action = dataset_files.write_kohya(image, caption, path=path, style=targets.kohya_key, text=text,
                                               if_exists=if_exists)
            results.append(TargetResult("kohya_json", path, action))
    except LlavaEdgeError:
        raise
    except OSError as err:
        raise OutputFileError(f"Cannot write {path or err.filename}: {err.strerror or err}. Nothing was replaced; "
                              "check the folder's permissions and free space.") from err
    return results


def _clean(text: str, *, strip: bool = False) -> str:
    """Text that every target can store the same: no characters XML cannot carry, ``\\n`` line ends, trimmed."""
    text = xml_safe(text).replace("\r\n", "\n").replace("\r", "\n").strip()
    return strip_preamble(text) if strip else text
