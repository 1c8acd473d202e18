"""cocaine-prometheus: ``--metrics HOST:PORT`` on ``cocaine node`` and ``cocaine run`` serves
the node's numbers in the Prometheus text format (``/metrics``) and a live, read-only web
console of its apps (``/``), on one small HTTP/1.1 listener without authentication: bind it
to loopback, or put a proxy that authenticates in front.

Modules: ``address`` (the option's value), ``collector`` (metrics from ``cocaine info``),
``state`` (the console's JSON), ``listener`` (the HTTP server), ``site`` (its routes),
``plugin`` (the hooks).
"""

__version__ = "0.1.0"
