"""Running the parties: health and status checks, Prometheus metrics and their HTTP
listener, log output, serving until a signal, and child ``fedmatch`` processes.

- :mod:`~fedmatch.ops.health`: gRPC health of a party over its own mTLS (``fedmatch health``);
- :mod:`~fedmatch.ops.status`: ``node status`` / ``coordinator status`` (health, log checked
  against its checkpoint, sizes, metrics);
- :mod:`~fedmatch.ops.metrics`, :mod:`~fedmatch.ops.metrics_http`: the metric sets of a node
  and of the coordinator (no sensitive labels) and the ``/metrics`` listener;
- :mod:`~fedmatch.ops.logjson`: text or one JSON object per log line;
- :mod:`~fedmatch.ops.serving`: serve until SIGTERM/SIGINT, then stop gracefully;
- :mod:`~fedmatch.ops.subprocs`: child processes for the demos and the federation bench.

May import the library and the roles (``node``, ``coordinator``: their configuration and
services); imported only by ``cli``, ``demo`` and ``bench``. ``node`` and ``coordinator``
never import it.
"""
