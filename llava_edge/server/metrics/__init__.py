"""Prometheus ``GET /metrics`` for ``llava-edge serve``, through ``prometheus_client`` (one registry per server).

* ``server_metrics``: ``ServerMetrics`` owns the registry and the request, task and queue metrics;
* ``model_metrics``: the model's loads, swaps, unloads, tokens and stage durations (the resident model's observer);
* ``scrape``: the middleware that counts every HTTP request, and the ``/metrics`` route itself.

Every label comes from a fixed set: route templates, API families, status codes, priority classes, Runware task
types, unload reasons, stages, and the ids of models this server loaded (never a name a client sent).
"""
