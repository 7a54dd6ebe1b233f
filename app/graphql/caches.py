"""Caches bounded by the bytes they hold, whatever clients send.

Keys are digests of what a client sent, never the text itself, so a key costs the same
32 bytes for a 16 KiB query as for `{ me { id } }`; each entry carries an estimate of the
memory its value holds, and the least recently used entries go once the total passes the
bound. An entry larger than the whole bound is not kept at all.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# What one entry costs beyond its value: the key (a tuple of a 16-byte digest and short
# strings), the OrderedDict's node and slot, the (value, size) tuple. Measured with
# tracemalloc on CPython 3.11 at about 250 bytes; rounded up.
ENTRY_OVERHEAD = 320


def digest(text: str) -> bytes:
    """A 16-byte BLAKE2b digest of the text (lone surrogates are refused before here, but
    `surrogatepass` keeps this total either way)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ByteBoundedLRU(Generic[K, V]):
    """Least recently used entries go first once the estimated bytes pass `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.total_bytes = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def clear(self) -> None:
        self._entries.clear()
        self.total_bytes = 0

    def put(self, key: K, value: V, size: int) -> None:
        """Keep `value`, estimated at `size` bytes (the entry's own overhead is added)."""
        size += ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.total_bytes -= previous[1]
        self._entries[key] = (value, size)
        self.total_bytes += size
        while self.total_bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.total_bytes -= evicted
