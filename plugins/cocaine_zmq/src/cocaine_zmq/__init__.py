"""cocaine-zmq: see README.md."""
