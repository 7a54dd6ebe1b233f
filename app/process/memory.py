"""Gives the heap's free pages back to the system when a worker goes quiet.

After a burst (a run of 1,000-row exports, fifty requests at once) glibc keeps the memory
Python freed inside the process's heap, and the worker's resident size stays at its peak.
`malloc_trim` hands the free pages back. It runs once after start-up and then only after half
a second without a request, so a busy worker never pays for it; without glibc (macOS, musl)
there is nothing to do.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim: Callable[[int], int] | None = getattr(ctypes.CDLL(name), "malloc_trim", None)
    return trim


def trim_now() -> None:
    """Once, after start-up: importing and building the schema leave freed memory behind."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


async def trim_when_idle(requests_seen: Callable[[], int], period: float = 0.5) -> None:
    """Until cancelled: trim once after each quiet `period` that followed some requests."""
    trim = _malloc_trim()
    if trim is None:
        return
    last_seen = trimmed_at = requests_seen()
    while True:
        await asyncio.sleep(period)
        seen = requests_seen()
        if seen == last_seen and seen != trimmed_at:
            trim(0)
            trimmed_at = seen
        last_seen = seen
