"""The photo step of a ``caption`` run: before the model runs, whether an image is already described (so a
rerun skips it); after, keywords from a second question about the same image (or, in a structured run, the
answer's own ``caption``, ``alt_text`` and ``keywords``), then the caption written into the image, XMP sidecars
and dataset files (``llava_edge.photos.writer``). ``caption_many`` calls it per image
(``runner.PhotoHook``) and turns its typed errors into error records."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llava_edge.api import Captioner, CaptionResult
from llava_edge.errors import InvalidRequestError, OutputFileError, StructuredOutputError
from llava_edge.generation import GenerationOptions
from llava_edge.photos import exiv2_io
from llava_edge.photos.caption_text import IfExists, check_if_exists, parse_keywords
from llava_edge.photos.targets import Targets, TextOptions, XmpStyle
from llava_edge.photos.writer import already_described, write_caption
from llava_edge.photos.xmp_packet import Marker
from llava_edge.schema import DEFAULT_PROMPT

KEYWORDS_PROMPT = "List keywords for this image, separated by commas."
"""The second question ``keywords`` asks, right after the caption, so the image's evaluated prefix is reused."""


@dataclass(frozen=True)
class PhotoFlags:
    """The ``caption`` command's photo flags as given, before ``PhotoOptions.from_flags`` checks them."""

    write_metadata: bool = False
    """``--write-metadata``: each caption into its image (XMP, IPTC, EXIF)."""
    keywords: bool = False
    """``--keywords``: also ask for keywords, written as dc:subject and IPTC Keywords."""
    xmp_sidecar: bool = False
    """``--xmp-sidecar``: an XMP sidecar beside each image."""
    xmp_style: XmpStyle | None = None
    """``--xmp-style``: photo.xmp (adobe, the default) or photo.jpg.xmp (darktable)."""
    sidecar_ext: str | None = None
    """``--sidecar-ext``: a text sidecar with this extension (.txt, .caption)."""
    metadata_jsonl: str | None = None
    """``--metadata-jsonl``: a Hugging Face imagefolder metadata.jsonl."""
    kohya_json: str | None = None
    """``--kohya-json``: a kohya metadata JSON."""
    prefix: str = ""
    """``--prefix``: trigger words before dataset captions."""
    suffix: str = ""
    """``--suffix``: words after dataset captions."""
    strip_preamble: bool = False
    """``--strip-preamble``: drop openers such as "The image shows"."""
    if_exists: str | None = None
    """``--if-exists``: skip, overwrite or append to an existing caption; ``None``: skip."""
    overwrite: bool = False
    """``--overwrite``: short for ``--if-exists overwrite``."""
    keep_times: bool = False
    """``--keep-times``: keep a rewritten image's modification time."""
    sidecar: bool = False
    """``--sidecar``: ``.txt`` captions beside the images. With another photo flag the photo step writes them (with
    its prefix, suffix and if-exists rules); alone, the run's outputs do (``plain_sidecar``)."""

    def plain_sidecar(self, photo: PhotoOptions | None) -> bool:
        """Whether ``--sidecar``'s files are the run's plain output (``outputs.SidecarWriter``): asked for, and
        no photo target (``photo``, from these flags) writes text sidecars."""
        return self.sidecar and (photo is None or photo.targets.text_sidecar is None)


@dataclass(frozen=True)
class PhotoOptions:
    """What the photo step writes, and how (the ``caption`` command's photo flags)."""

    targets: Targets
    text: TextOptions = field(default_factory=TextOptions)
    if_exists: IfExists = "skip"
    keep_times: bool = False
    keywords: bool = False

    @classmethod
    def from_flags(cls, flags: PhotoFlags) -> PhotoOptions | None:
        """The options from the command's flags, or ``None`` when none asks for a photo target.

        Raises:
            InvalidRequestError: ``--overwrite`` with another ``--if-exists``; ``--keywords`` without an XMP target.
        """
        jsonl, kohya = flags.metadata_jsonl, flags.kohya_json
        targets = Targets(
            metadata=flags.write_metadata, xmp_sidecar=flags.xmp_sidecar, xmp_style=flags.xmp_style or "adobe",
            text_sidecar=flags.sidecar_ext, metadata_jsonl=Path(jsonl) if jsonl else None,
            kohya_json=Path(kohya) if kohya else None,
        )
        shaping = any((flags.prefix, flags.suffix, flags.strip_preamble, flags.if_exists, flags.overwrite))
        if flags.sidecar and targets.text_sidecar is None and (targets.any() or shaping):
            targets = dataclasses.replace(targets, text_sidecar=".txt")  # --sidecar through the same writer
        if_exists = flags.if_exists
        if flags.overwrite:
            if if_exists not in (None, "overwrite"):
                raise InvalidRequestError(f"--overwrite is short for --if-exists overwrite; it contradicts "
                                          f"--if-exists {if_exists}.", parameter="ifExists")
            if_exists = "overwrite"
        if not targets.any():
            if shaping or flags.keywords or flags.keep_times:
                raise InvalidRequestError("--prefix, --suffix, --strip-preamble, --if-exists, --keywords and "
                                          "--keep-times shape what --write-metadata, --xmp-sidecar, --sidecar(-ext), "
                                          "--metadata-jsonl or --kohya-json write; add one of those.")
            return None
        if flags.keywords and not targets.xmp:
            raise InvalidRequestError("--keywords go into XMP: add --write-metadata or --xmp-sidecar.",
                                      parameter="keywords")
        text = TextOptions(prefix=flags.prefix, suffix=flags.suffix, strip_preamble=flags.strip_preamble)
        return cls(targets, text, check_if_exists(if_exists or "skip"), flags.keep_times, flags.keywords)

    def check(self, images: list[str]) -> None:
        """Fail before anything is captioned: the ``photos`` extra is missing, or an input is no local file.

        Raises:
            MissingExtraError: XMP targets without python-exiv2 (with the install hint).
            OutputFileError: an input is a URL, a data URI or not a file.
        """
        if self.targets.xmp:
            exiv2_io.module()
        for image in images:
            if not os.path.isfile(image):
                raise OutputFileError(f"Captions are written beside image files, and {image[:200]!r} is not one; "
                                      "download it first.")


def photo_options_for(flags: PhotoFlags, images: list[str], *, ray: bool = False) -> PhotoOptions | None:
    """``PhotoOptions.from_flags``, checked against the run's images (``PhotoOptions.check``).

    Raises:
        InvalidRequestError, MissingExtraError, OutputFileError: as those two; ``ray`` with photo targets.
    """
    photo = PhotoOptions.from_flags(flags)
    if photo is not None and ray:
        raise InvalidRequestError("--ray does not write photo metadata or dataset files yet; leave out one of them.")
    if photo is not None:
        photo.check(images)
    return photo


class PhotoStep:
    """``runner.PhotoHook`` for one loaded model: the marker names it and the prompt(s)."""

    def __init__(self, options: PhotoOptions, *, model: str, prompt: str | None, structured: bool = False):
        """``structured``: the run asks for JSON (a schema); the caption, alt text and keywords come from the
        answer's fields ``caption``, ``alt_text`` and ``keywords`` where it has them, and no second question
        is asked."""
        self.options = options
        self.structured = structured
        keywords = [KEYWORDS_PROMPT] if options.keywords and not structured else []
        self.marker = Marker(model, "\n".join([prompt or DEFAULT_PROMPT, *keywords]))

    def described(self, image: str) -> bool:
        """Whether writing would change nothing, so the image need not be captioned (``already_described``)."""
        return already_described(image, self.marker, targets=self.options.targets, if_exists=self.options.if_exists)

    def write(self, captioner: Captioner, image: str, data: bytes, result: CaptionResult, detail: str,
              options: GenerationOptions | None, *, image_tokens: int | None = None,
              token_selection: str | None = None) -> dict[str, Any]:
        """Ask for keywords (when on; seeing the image as the caption did: ``detail`` and the token budget),
        write the caption everywhere, and return the ``PhotoRecord`` as JSON.

        Raises:
            LlavaEdgeError: ``PhotoMetadataError`` and the others ``write_caption`` raises, or the keyword
                question failed.
        """
        if self.structured:
            caption, alt_text, keywords = structured_fields(result)
        else:
            caption, alt_text, keywords = result.text, None, None
            if self.options.keywords:
                answer = captioner.describe(data, KEYWORDS_PROMPT, detail=detail, options=options,
                                            image_tokens=image_tokens, token_selection=token_selection)
                keywords = parse_keywords(answer.text)
        record = write_caption(image, caption, keywords, targets=self.options.targets,
                               if_exists=self.options.if_exists, keep_times=self.options.keep_times,
                               marker=self.marker, alt_text=alt_text, text=self.options.text)
        return record.to_json()


def structured_fields(result: CaptionResult) -> tuple[str, str | None, list[str] | None]:
    """(caption, alt text, keywords) of a structured answer: its ``caption`` (or ``description``), ``alt_text``
    and ``keywords`` fields, each when it is there and of the right type; the whole JSON text when it has no
    caption.

    Raises:
        StructuredOutputError: the answer was cut (``max_tokens``), so there is nothing sure to write.
    """
    if result.data is None:
        raise StructuredOutputError(f"The structured answer was cut ({result.finish_reason}) before it was "
                                    "complete JSON; nothing was written. Raise --max-tokens.")
    fields = result.data if isinstance(result.data, dict) else {}
    caption = next((fields[name] for name in ("caption", "description") if isinstance(fields.get(name), str)),
                   result.text)
    alt_text = fields["alt_text"] if isinstance(fields.get("alt_text"), str) else None
    keywords = fields.get("keywords")
    if not (isinstance(keywords, list) and all(isinstance(word, str) for word in keywords)):
        keywords = None
    return caption, alt_text, keywords
