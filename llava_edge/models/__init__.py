"""Model files: the variant catalogue (``models.toml``), selection by memory, hub download with resumable
transfer, model-file checks, and the synthetic models used by tests and benchmarks. A lower layer: the core's
``api`` and ``runtime`` use it; it never imports them."""
