"""cocaine-zmq: the ``zeromq-server``, ``zeromq-sink`` and ``zeromq-subscriber`` drivers.

App code may use :func:`frames_of` to get back the frames of a multi-frame message::

    from cocaine_zmq import frames_of

    def lookup(request):
        key, *fields = frames_of(request)

Importing this package is cheap (it needs only msgpack), so handlers in slaves can use it.
The drivers themselves live in ``cocaine_zmq.server``, ``.sink`` and ``.subscriber``; the
plugin entry point is ``cocaine_zmq.plugin``. See docs/zeromq.md for the wire formats.
"""

from cocaine_zmq.frames import frames_of, pack_frames

__all__ = ["frames_of", "pack_frames"]
