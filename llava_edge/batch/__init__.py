"""The batch wing (``llava-edge caption``): captioning many images with resume, the JSONL/CSV/sidecar outputs,
the photo step, and Ray Data. Entered only from the CLI and the package's public face (``caption_many``)."""
