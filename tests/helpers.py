"""Small helpers shared by test modules."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine


def cancel_once_ready(victim: Callable[[asyncio.Event], Coroutine[object, object, None]]) -> None:
    """Run ``victim(ready)`` as a task, cancel it once it sets ``ready``, expect it to stop."""

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(victim(ready))
        await ready.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
