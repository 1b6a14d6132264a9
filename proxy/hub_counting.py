"""Counting tokens of large inputs without holding the gevent hub.

Large inputs never hold the gevent hub. A 20 MB prompt is ~4 s of tokenizer work (measured on
the 2-core development machine: tiktoken cl100k_base counts ~3.4 MB/s on one 4.5 MB text, ~8 MB/s
in 64 KiB slices). Choices, by measurement (the longest pause of a 0.5 ms ticker on the main
thread while 4.5 MB of text is counted in a worker thread):

- the whole text in a thread: tiktoken's Rust encode releases the GIL, but building the Python
  list of 2.2 M token ids does not: a 271 ms pause;
- 64 KiB slices in a thread: 12 ms longest pause, 0.57 s in all (faster than one call);
- 64 KiB slices inline, yielding between them: 6.6 ms of hub time per slice, and the hub does
  nothing else while the big count runs.

In the gevent worker, counting a 19.5 MB prompt for gpt-4o paused a 1 ms ticker greenlet for
1,699 ms when counted in one call; counted as below, the longest pause was 5.7 ms (2.2 s in all),
and with ``limit=128000`` the count stopped after 29 ms.

So a text longer than ``SLICE_CHARS`` is cut at spaces into slices counted one by one in
gevent's threadpool (exact for ordinary text: a cut before a space is where tiktoken's
pre-tokenizer splits anyway), and many short texts counted inline yield to the hub every
``YIELD_CHARS`` characters. ``count(..., limit=N)`` stops as soon as the count passes N: the
context-window pre-check only needs to know that a prompt is over the largest window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gevent

TextCounter = Callable[[str], int]

SLICE_CHARS = 64 * 1024  # a longer text is counted in slices in gevent's threadpool
YIELD_CHARS = 64 * 1024  # inline counting yields to the hub after this many characters


class LimitPassed(Exception):
    """The count went past the caller's limit; ``seen`` is how far it got."""

    def __init__(self, seen: int) -> None:
        super().__init__(seen)
        self.seen = seen


class HubFriendly:
    """A text counter that keeps the hub free and stops at ``limit``."""

    __slots__ = ("_count", "_inline", "_limit", "_seen")

    def __init__(self, count: TextCounter, limit: int | None) -> None:
        self._count = count
        self._limit = limit
        self._inline = 0  # characters counted inline since the last yield
        self._seen = 0  # tokens counted so far in this call

    def __call__(self, text: str) -> int:
        if len(text) <= SLICE_CHARS:
            self._inline += len(text) + 32  # + per-call cost: many empty texts add up too
            if self._inline > YIELD_CHARS:
                self._inline = 0
                gevent.sleep(0)
            return self._add(self._count(text))
        pool = gevent.get_hub().threadpool
        total = 0
        for piece in slices(text):
            total += self._add(pool.apply(self._count, (piece,)))
        return total

    def _add(self, tokens: int) -> int:
        self._seen += tokens
        if self._limit is not None and self._seen > self._limit:
            raise LimitPassed(self._seen)
        return tokens


def slices(text: str, size: int = SLICE_CHARS) -> Iterator[str]:
    """``text`` in pieces of at most ``size`` characters, cut before a space where there is one."""
    start, end_of_text = 0, len(text)
    while start < end_of_text:
        end = start + size
        if end < end_of_text:
            cut = text.rfind(" ", start + size // 2, end)
            if cut > start:
                end = cut
        yield text[start:end]
        start = end
