"""Handing one event to its handlers, for ``InMemoryEventBus``.

The bus decides which handlers an event reaches and counts what happens; this module
calls them: sync handlers one after another, async handlers of the same event
concurrently, each failure caught and reported so that it stops no other handler.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeGuard

from asgiref.sync import iscoroutinefunction, sync_to_async

from ..events.base import DomainEvent
from .interface import HandlerLike, handler_function


@dataclass(frozen=True, eq=False)
class Subscription:
    """A handler as subscribed, with its callable resolved once."""

    handler: HandlerLike
    func: Callable[[DomainEvent], Any]
    name: str
    is_async: bool


#: Told about every handler call once it has finished: the error it raised, or ``None``.
OnHandled: TypeAlias = Callable[[Subscription, DomainEvent, Exception | None], None]


def _handler_name(handler: object) -> str:
    if inspect.isfunction(handler) or inspect.ismethod(handler):
        return f"{handler.__module__}.{handler.__qualname__}"
    cls = type(handler)
    return f"{cls.__module__}.{cls.__qualname__}"


def subscription(handler: HandlerLike) -> Subscription:
    """``handler`` ready to be called; ``TypeError`` when it cannot handle events."""
    func = handler_function(handler)
    # A callable instance is async when its class's ``__call__`` is.
    is_async = iscoroutinefunction(func) or (
        not inspect.isroutine(func) and iscoroutinefunction(type(func).__call__)
    )
    return Subscription(handler, func, _handler_name(handler), is_async)


def _is_awaitable(value: object) -> TypeGuard[Awaitable[Any]]:
    return inspect.isawaitable(value)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


# Not _runtime.call_handler: that pays for a new loop and thread per call; this reuses one.
class CoroutineRunner:
    """Runs coroutines to completion on a private loop, created on first use.

    Sync publishes with no async handler never pay for an event loop.
    """

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def run(self, awaitable: Awaitable[Any]) -> Any:
        if self._runner is None:
            self._runner = asyncio.Runner()
        coroutine = awaitable if inspect.iscoroutine(awaitable) else _await(awaitable)
        return self._runner.run(coroutine)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def in_running_loop() -> bool:
    """Whether the calling thread is running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _settle(
    sub: Subscription, event: DomainEvent, awaitable: Awaitable[Any], on_handled: OnHandled
) -> None:
    try:
        await awaitable
    except Exception as exc:
        on_handled(sub, event, exc)
    else:
        on_handled(sub, event, None)


async def _call_async(sub: Subscription, event: DomainEvent, on_handled: OnHandled) -> None:
    try:
        await sub.func(event)
    except Exception as exc:
        on_handled(sub, event, exc)
    else:
        on_handled(sub, event, None)


async def _call_sync_in_order(
    subs: Sequence[Subscription], event: DomainEvent, on_handled: OnHandled
) -> None:
    for sub in subs:
        try:
            result = await sync_to_async(sub.func)(event)
            if _is_awaitable(result):
                await result
        except Exception as exc:
            on_handled(sub, event, exc)
        else:
            on_handled(sub, event, None)


def deliver(
    event: DomainEvent,
    subs: Sequence[Subscription],
    runner: CoroutineRunner,
    on_handled: OnHandled,
) -> None:
    """Deliver ``event`` from sync code; returns once every handler has finished.

    Sync handlers run here, in order; what the async ones return is then awaited all
    together on ``runner``'s loop.
    """
    pending: list[Awaitable[None]] = []
    for sub in subs:
        try:
            result = sub.func(event)
        except Exception as exc:
            on_handled(sub, event, exc)
            continue
        if _is_awaitable(result):
            pending.append(_settle(sub, event, result, on_handled))
        else:
            on_handled(sub, event, None)
    if len(pending) == 1:
        runner.run(pending[0])
    elif pending:
        runner.run(_gather(pending))


async def adeliver(event: DomainEvent, subs: Sequence[Subscription], on_handled: OnHandled) -> None:
    """Deliver ``event`` from async code; returns once every handler has finished.

    Async handlers are awaited concurrently on the running loop; the sync ones run one
    after another in a worker thread (``sync_to_async``) alongside them.
    """
    sync_subs = [sub for sub in subs if not sub.is_async]
    calls = [_call_async(sub, event, on_handled) for sub in subs if sub.is_async]
    if sync_subs:
        calls.append(_call_sync_in_order(sync_subs, event, on_handled))
    if len(calls) == 1:
        await calls[0]
    elif calls:
        await _gather(calls)


async def _gather(awaitables: Sequence[Awaitable[None]]) -> None:
    # Each awaitable reports its own failure, so nothing here raises but cancellation.
    await asyncio.gather(*awaitables)
