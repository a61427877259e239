"""``llava-edge eval``: quality loss, speed and memory of quantization variants against a reference model."""
