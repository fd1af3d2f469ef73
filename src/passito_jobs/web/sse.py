"""Live pages: server-sent events, woken by LISTEN/NOTIFY, with a 2-second check as the guarantee.

One process holds one LISTEN connection (`Notifier`) on the queue's channel; each notification
wakes every open stream. A stream re-renders its fragment when woken (at most once a second) or
every POLL_INTERVAL otherwise — completions send no notification, so the check is what shows a
job finishing — and sends the fragment only when it changed. The page's script swaps it in; a
browser without EventSource, or a stream refused because too many are open, polls the fragment
every 2 s instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from passito_jobs.queue.asyncstore import AsyncStore
from passito_jobs.queue.connection import connect_async
from passito_jobs.queue.errors import DatabaseUnavailableError

log = logging.getLogger("passito_jobs.web")

POLL_INTERVAL = 2.0
MIN_INTERVAL = 1.0
KEEPALIVE = 15.0
MAX_STREAMS = 100
STREAM_LIFETIME = 600.0
"""A stream ends after this long; the browser reconnects (so no stream outlives a deploy long)."""
RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0)


class Notifier:
    """The process's LISTEN connection; `wait` returns when a notification arrived or on timeout."""

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._waiters: set[asyncio.Event] = set()
        self._task: asyncio.Task[None] | None = None
        self.streams = 0
        self.listening = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="web-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                conn = await connect_async(self.url, timeout=self.connect_timeout)
            except DatabaseUnavailableError as exc:
                await self._pause(failures, str(exc))
                failures += 1
                continue
            try:
                store = AsyncStore(conn, worker_id="web")
                await store.listen()
                self.listening, failures = True, 0
                async for _ in store.notifications():
                    self.wake()
            except Exception as exc:  # a lost connection: polling carries on meanwhile
                self.listening = False
                await self._pause(failures, f"{type(exc).__name__}: {exc}")
                failures += 1
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _pause(self, failures: int, reason: str) -> None:
        delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
        if failures == 0:
            log.warning(
                "live updates: LISTEN connection lost (%s); polling every %gs meanwhile",
                reason,
                POLL_INTERVAL,
            )
        await asyncio.sleep(delay)

    def wake(self) -> None:
        for event in self._waiters:
            event.set()

    @contextlib.asynccontextmanager
    async def subscription(self) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.add(event)
        self.streams += 1
        try:
            yield event
        finally:
            self._waiters.discard(event)
            self.streams -= 1


def event(name: str, data: str) -> str:
    """One server-sent event; every line of `data` gets its own `data:` field."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


async def stream(
    notifier: Notifier, render: Callable[[], Awaitable[str]], *, lifetime: float = STREAM_LIFETIME
) -> AsyncIterator[str]:
    """The events of one live fragment: its HTML whenever it changed."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + lifetime
    last: str | None = None
    quiet_since = loop.time()
    async with notifier.subscription() as woken:
        yield "retry: 2000\n\n"
        while loop.time() < ends:
            woken.clear()
            rendered_at = loop.time()
            rendered = await render()
            if rendered != last:
                last, quiet_since = rendered, loop.time()
                yield event("update", rendered)
            elif loop.time() - quiet_since > KEEPALIVE:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), POLL_INTERVAL)
            # A busy queue notifies thousands of times a second: render at most once a second.
            await asyncio.sleep(max(0.0, rendered_at + MIN_INTERVAL - loop.time()))
