"""The slave runtime of the ``python`` language: answers invocations with the app's handlers.

``load`` runs once in the template process; ``serve`` runs in every slave forked from it.
With ``engine.concurrency`` 1 the slave is a plain blocking loop (async handlers run to
completion one at a time). Above 1, and if the app has async handlers, it runs an asyncio loop
where async jobs run together and sync handlers run in turn.

A streamed INVOKE (its fifth field says ``stream``) gives the handler a ``Request`` whose
``stream`` reads the body's pieces from the channel as they come. An answer that is a
``Response`` (returned, or yielded first by a generator) sends HEADERS before its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import traceback
from collections.abc import Callable
from typing import Any

from cocaine_core.errortext import MESSAGE_LIMIT, TRACEBACK_LIMIT, cut
from cocaine_core.protocol import Code, Status, encode_value
from cocaine_core.slave_channel import JobCancelled, SlaveChannel
from cocaine_python.body import RequestStream
from cocaine_python.loader import LoadedApp, load
from cocaine_python.output import capture_output
from cocaine_python.request import Request, StreamedRequest
from cocaine_python.response import Response

__all__ = ["load", "serve"]


def serve(app: LoadedApp, channel: SlaveChannel) -> int:
    """Run the slave until the engine says terminate; return the exit code."""
    settings = channel.handshake()
    capture_output(channel)
    runner = Runner(app, channel)
    channel.ready()
    concurrency = int(settings.get("concurrency", 1))
    has_async = any(_is_async(h) for h in app.handlers.values())
    try:
        if concurrency > 1 and has_async:
            asyncio.run(runner.serve_async())
        else:
            runner.serve_blocking()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        channel.close()
    return 0


def _is_async(handler: Any) -> bool:
    function = getattr(handler, "__call__", handler)  # noqa: B004 - callable objects too
    return (inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler)
            or inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function))


class Runner:
    """Calls handlers and sends their answers as chunks, choke or error."""

    def __init__(self, app: LoadedApp, channel: SlaveChannel) -> None:
        self.app = app
        self.channel = channel
        self.loop: asyncio.AbstractEventLoop | None = None
        self.after_send: Callable[[], None] = lambda: None
        #: Set when messages were read (credit may have come), for async jobs waiting on it.
        self.credit: asyncio.Event | None = None

    # -- the blocking loop --------------------------------------------------------------------

    def serve_blocking(self) -> None:
        """Handle one message at a time until terminate."""
        while True:
            fields, body = self.channel.recv()
            if fields[0] == Code.INVOKE:
                self.run_sync(fields, body or b"")
            elif fields[0] == Code.TERMINATE:
                return

    def run_sync(self, fields: list[Any], body: bytes) -> None:
        """Run one job to completion in this thread."""
        job_id, event = fields[1], fields[2]
        handler = self.app.handlers.get(event)
        if handler is None:
            self._unknown(job_id, event)
            return
        result: Any = None
        try:
            result = handler(self._request(fields, body, None))
            if inspect.isawaitable(result):
                result = self._event_loop().run_until_complete(result)
            if inspect.isasyncgen(result):
                self._event_loop().run_until_complete(self._drain_async(job_id, result))
            elif inspect.isgenerator(result):
                self._drain(job_id, result)
            else:
                self._answer(job_id, result)  # answer and end: one message (or head, then it)
                return
        except JobCancelled:  # nobody waits for it: stop the generator, end the job quietly
            with contextlib.suppress(Exception):
                if inspect.isasyncgen(result):
                    self._event_loop().run_until_complete(result.aclose())
                elif inspect.isgenerator(result):
                    result.close()
            self.channel.choke(job_id)
            return
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            self._fail(job_id, exc)
            return
        self.channel.choke(job_id)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    # -- the asyncio loop ---------------------------------------------------------------------

    async def serve_async(self) -> None:
        """Handle messages as they come; async handlers run concurrently."""
        loop = asyncio.get_running_loop()
        fd = self.channel.descriptor()
        wake = asyncio.Event()
        self.after_send = wake.set
        self.credit = asyncio.Event()
        loop.add_reader(fd, wake.set)
        # Held answers the heartbeat thread sent: that send may take the descriptor's edge.
        self.channel.on_flushed = lambda: loop.call_soon_threadsafe(wake.set)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                while (message := self.channel.recv_ready()) is not None:
                    fields, body = message
                    if fields[0] == Code.TERMINATE:
                        if tasks:
                            await asyncio.wait(tasks, timeout=5)
                        return
                    if fields[0] != Code.INVOKE:
                        continue
                    handler = self.app.handlers.get(fields[2])
                    if handler is not None and _is_async(handler):
                        task = loop.create_task(self.run_async(fields, body or b""))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    else:
                        self.run_sync(fields, body or b"")
                self.credit.set()
                wake.clear()
                if not self.channel.pending() and not self.channel.readable():
                    await wake.wait()
        finally:
            self.channel.on_flushed = lambda: None
            loop.remove_reader(fd)

    async def run_async(self, fields: list[Any], body: bytes) -> None:
        """Run one async job on the running loop."""
        job_id, event = fields[1], fields[2]
        handler = self.app.handlers[event]
        result: Any = None
        try:
            result = handler(self._request(fields, body, self._wait_messages))
            if inspect.isawaitable(result):
                result = await result
            last = None
            if inspect.isasyncgen(result):
                await self._drain_async(job_id, result)
            elif inspect.isgenerator(result):
                self._drain(job_id, result)
            elif isinstance(result, Response):
                last = self._head(job_id, result)
            else:
                last = self._encode(result)
        except JobCancelled:
            with contextlib.suppress(Exception):
                if inspect.isasyncgen(result):
                    await result.aclose()
                elif inspect.isgenerator(result):
                    result.close()
            last = None
        except BaseException as exc:  # whatever it is, the job is answered
            self._fail(job_id, exc)
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            return
        self.channel.choke(job_id, last)
        self.after_send()

    # -- requests -------------------------------------------------------------------------------

    def _request(self, fields: list[Any], body: bytes, wait: Any) -> Request:
        """The handler's ``Request``; for a streamed INVOKE, one that reads its pieces
        (``wait``: how ``async for`` waits on serve_async's loop; None: in place)."""
        job_id, event = fields[1], fields[2]
        meta = fields[3] if len(fields) > 3 else {}
        if len(fields) > 4 and self.channel.streamed(job_id):
            return StreamedRequest(RequestStream(self.channel, job_id, wait=wait,
                                                 notify=self.after_send), event, meta)
        return Request(body, event, meta)

    async def _wait_messages(self) -> None:
        """Wait on serve_async's loop until it has read messages (pieces may have come)."""
        credit = self.credit
        assert credit is not None
        credit.clear()
        await credit.wait()

    # -- answers --------------------------------------------------------------------------------

    async def _drain_async(self, job_id: int, agen: Any) -> None:
        # On ``serve_async``'s loop wait there; on run_sync's own loop ``chunk`` waits.
        credit = self.credit if asyncio.get_running_loop() is not self.loop else None
        started = False
        async for item in agen:
            while credit is not None and not self.channel.may_send(job_id):
                credit.clear()  # wait on the loop, so the slave's other jobs go on
                await credit.wait()
            started = self._item(job_id, item, started)

    def _drain(self, job_id: int, generator: Any) -> None:
        started = False
        for item in generator:
            started = self._item(job_id, item, started)

    def _item(self, job_id: int, item: Any, started: bool) -> bool:
        """Send what a generator yielded: a chunk, or (first) a ``Response`` without a body
        as the answer's head; whether the answer has started (something went out)."""
        if isinstance(item, Response):
            if started:
                raise ValueError("the generator yielded a Response after the answer had "
                                 "started: yield Response(status=..., headers=...) first, "
                                 "before any chunk, and only once")
            if item.body is not None:
                raise ValueError("the generator yielded a Response with a body: yield "
                                 "Response(status=..., headers=...) first, then the body as "
                                 "chunks")
            self.channel.headers(job_id, item.status, item.headers)
            self.after_send()
            return True
        data = self._encode(item)
        if data is None:
            return started
        self.channel.chunk(job_id, data)
        self.after_send()
        return True

    def _head(self, job_id: int, response: Response) -> bytes | None:
        """Send a returned ``Response``'s HEADERS; its body, encoded, for the CHOKE."""
        last = self._encode(response.body)  # encoding fails before the head goes out
        self.channel.headers(job_id, response.status, response.headers)
        return last

    def _answer(self, job_id: int, result: Any) -> None:
        last = self._head(job_id, result) if isinstance(result, Response) else self._encode(
            result)
        self.channel.choke(job_id, last)

    @staticmethod
    def _encode(value: Any) -> bytes | None:
        try:
            return encode_value(value)
        except Exception as exc:
            what = type(value).__name__
            if isinstance(value, str) and isinstance(exc, UnicodeEncodeError):
                raise TypeError(f"the handler returned a {what} that is not valid UTF-8 "
                                f"(it holds a lone surrogate): {_describe(exc)}") from None
            if isinstance(value, str):
                raise TypeError(f"the handler returned a {what} whose encoding to UTF-8 "
                                f"failed: {_describe(exc)}") from None
            raise TypeError(f"the handler returned a {what}, which is not bytes, str, None "
                            f"or msgpack-able: {_describe(exc)}") from None

    def _fail(self, job_id: int, exc: BaseException) -> None:
        """Report a handler's exception as a 502; never raises, whatever the exception does
        (a ``__str__`` that raises, lone surrogates, megabytes of message)."""
        message = cut(f"{type(exc).__name__}: {_describe(exc)}", MESSAGE_LIMIT)
        self.channel.error(job_id, Status.APP_ERROR, message, _traceback(exc))
        self.after_send()

    def _unknown(self, job_id: int, event: str) -> None:
        self.channel.error(job_id, Status.NOT_FOUND, f"this app has no handler for '{event}'")
        self.after_send()


def _describe(exc: BaseException) -> str:
    """``str(exc)``, or what went wrong making it (never raises)."""
    try:
        return str.__str__(str(exc))  # a plain str, even from a str subclass
    except BaseException as failure:  # any failure is only reported
        try:
            why = f"{type(failure).__name__}: {str.__str__(str(failure))}"
        except BaseException:
            why = type(failure).__name__
        return f"<exception str() failed: {cut(why, 200)}>"


def _traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` (with its causes), each part and the whole bounded; never
    raises."""
    try:
        parts = traceback.format_exception(type(exc), exc, exc.__traceback__)
        text = "".join(cut(part, MESSAGE_LIMIT) for part in parts)
    except BaseException as failure:  # any failure is only reported
        text = f"<the traceback could not be formatted: {type(failure).__name__}>"
    return cut(text, TRACEBACK_LIMIT, keep_end=True)
