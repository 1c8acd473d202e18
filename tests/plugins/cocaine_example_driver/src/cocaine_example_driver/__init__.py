"""A third-party cocaine plugin: the ``oneshot`` driver."""
