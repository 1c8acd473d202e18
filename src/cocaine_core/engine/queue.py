"""The app's queue of jobs waiting for a slave: oldest first, urgent jobs in front."""

from __future__ import annotations

import collections
from collections.abc import Iterator

from cocaine_core.engine.job import Job


class JobQueue:
    """Jobs waiting for a slave. ``push`` appends (urgent: to the front); ``pop`` takes the
    oldest job; ``remove`` takes one out (its client left); ``remove_expired`` takes out jobs
    whose deadline has passed. A job that has ended (``Job.finished``) is never handed out."""

    #: Taken-out jobs the deque may still hold before it is rebuilt without them.
    SLACK = 64

    def __init__(self) -> None:
        self._jobs: collections.deque[Job] = collections.deque()
        #: The ids of the jobs really waiting. ``remove`` only forgets an id, so taking a job
        #: out costs the same however long the queue (a client that leaves may cancel
        #: thousands at once); the deque sheds it at the front, or when taken-out jobs pile up.
        self._waiting: set[int] = set()

    def push(self, job: Job) -> None:
        """Queue ``job``: urgent jobs go before every non-urgent one (and after earlier urgent
        ones, so urgent jobs keep their own order)."""
        self._waiting.add(job.id)
        if job.urgent:
            self._push_urgent(job)
        else:
            self._jobs.append(job)

    def _push_urgent(self, job: Job) -> None:
        index = 0
        while index < len(self._jobs) and self._jobs[index].urgent:
            index += 1
        self._jobs.insert(index, job)

    def push_front(self, job: Job) -> None:
        """Put ``job`` at the very front (a retry goes before everything)."""
        self._waiting.add(job.id)
        self._jobs.appendleft(job)

    def pop(self) -> Job | None:
        """Take the job that should run next, or None."""
        while self._jobs:
            job = self._jobs.popleft()
            if job.id in self._waiting:
                self._waiting.discard(job.id)
                if not job.finished:
                    return job
        return None

    def remove(self, job: Job) -> bool:
        """Take ``job`` out if it waits here (it is then done with: never pushed again);
        return whether it did."""
        if job.id not in self._waiting:
            return False
        self._waiting.discard(job.id)
        if len(self._jobs) - len(self._waiting) > max(self.SLACK, len(self._waiting)):
            self._jobs = collections.deque(self)
        return True

    def remove_expired(self, now: float) -> list[Job]:
        """Take out and return every job whose deadline has passed."""
        if not any(job.deadline is not None for job in self._jobs):
            return []
        expired = [job for job in self if job.expired(now)]
        if expired:
            self._waiting.difference_update(job.id for job in expired)
            self._jobs = collections.deque(self)
        return expired

    def drain(self) -> list[Job]:
        """Take out and return every job."""
        jobs = list(self)
        self._jobs, self._waiting = collections.deque(), set()
        return jobs

    def __len__(self) -> int:
        return len(self._waiting)

    def __iter__(self) -> Iterator[Job]:
        waiting = self._waiting
        return (job for job in self._jobs if job.id in waiting)
