"""A new version of an app takes over from the running one (``Engine.hand_over``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocaine_core.engine.engine import Engine


async def hand_over(old: Engine, successor: Engine) -> None:
    """Give way to a new version of this app without dropping a job.

    The drivers stop, the successor's drivers start, queued jobs move to ``successor`` (in
    order), and this engine drains: jobs in flight finish here, then it stops. If the
    successor's drivers cannot start (an address in use), this version's start again and
    it goes on serving (if even they cannot, it stops); the error is raised.
    """
    await old._stop_drivers()
    try:
        await successor.start_drivers()
    except BaseException:
        await successor._stop_drivers()  # those it started hold what the old ones need
        try:
            await old.restart_drivers()  # this version goes on serving
        except BaseException:
            await old.stop()
        raise
    for job in old.queue.drain():
        successor.submit(job)
    await old.stop()
