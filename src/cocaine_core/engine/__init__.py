"""The engine: one per app, a queue of jobs and a self-managing pool of slaves."""

from cocaine_core.engine.job import Job, JobSink, NullSink
from cocaine_core.engine.pool import AppState, Engine

__all__ = ["AppState", "Engine", "Job", "JobSink", "NullSink"]
