"""The batch wing: captioning many images with resume, the JSONL/CSV/sidecar outputs, and Ray Data.
Entered only from the CLI and the package's public face (``caption_many``)."""
