"""The only place that imports ``llama_cpp``: loading, libmtmd image evaluation, the decoding loop and
sampling. Imported lazily, so that a missing or broken llama-cpp-python build cannot break the rest."""
