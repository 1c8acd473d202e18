"""The app's queue of jobs waiting for a slave: oldest first, urgent jobs in front."""

from __future__ import annotations

import collections
from collections.abc import Iterator

from cocaine_core.engine.job import Job


class JobQueue:
    """Jobs waiting for a slave. ``push`` appends (urgent: to the front); ``pop`` takes the
    oldest job; ``remove_expired`` takes out jobs whose deadline has passed."""

    def __init__(self) -> None:
        self._jobs: collections.deque[Job] = collections.deque()

    def push(self, job: Job) -> None:
        """Queue ``job``: urgent jobs go before every non-urgent one (and after earlier urgent
        ones, so urgent jobs keep their own order)."""
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
        self._jobs.appendleft(job)

    def pop(self) -> Job | None:
        """Take the job that should run next, or None."""
        return self._jobs.popleft() if self._jobs else None

    def remove_expired(self, now: float) -> list[Job]:
        """Take out and return every job whose deadline has passed."""
        if not any(job.deadline is not None for job in self._jobs):
            return []
        expired = [job for job in self._jobs if job.expired(now)]
        if expired:
            self._jobs = collections.deque(job for job in self._jobs if not job.expired(now))
        return expired

    def drain(self) -> list[Job]:
        """Take out and return every job."""
        jobs, self._jobs = list(self._jobs), collections.deque()
        return jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs)
