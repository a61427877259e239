"""The Runware-compatible server wing (``llava-edge serve``): the app, its settings, OpenAPI, the task
service and its results, and webhook/upload deliveries. Needs the ``server`` extra; entered only from the CLI."""
