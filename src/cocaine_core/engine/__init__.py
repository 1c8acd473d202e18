"""The engine: one per app, a queue of jobs and a self-managing pool of slaves.

``engine.py`` is the app's life, its queue and dispatch; ``pool.py`` its slaves and the
supervisor's steps; ``channel.py`` the socket its slaves talk to; ``job.py``, ``queue.py``,
``slave_handle.py``, ``stats.py`` and ``restarts.py`` the pieces they share.
"""

from cocaine_core.engine.engine import AppState, Engine
from cocaine_core.engine.job import Job, JobSink, NullSink

__all__ = ["AppState", "Engine", "Job", "JobSink", "NullSink"]
