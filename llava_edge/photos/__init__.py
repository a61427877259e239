"""The photos wing: captions where photo managers and training pipelines look for them. The per-image API is
``writer`` (``write_caption``, ``already_described``, ``caption_packet``); under it the in-memory XMP packet
(``xmp_packet``), embedded XMP/IPTC/EXIF (``embedded``), XMP sidecars (``sidecar``), text sidecars
(``text_sidecar``: ``.txt``/``.caption``, their one writer) and dataset files (``dataset_files``: ``metadata.jsonl``,
kohya JSON). Embedded metadata and sidecars need
the ``photos`` extra (python-exiv2, pillow-heif); only ``exiv2_io`` imports exiv2, and only when first used."""
