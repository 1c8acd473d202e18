"""cocaine-http: the ``http-server`` driver (HTTP/1.1 requests as jobs).

The driver lives in ``cocaine_http.driver`` (connections in ``.connection``, answers in
``.answer``); the plugin entry point is ``cocaine_http.plugin``. See docs/http.md.
"""
