"""Bounded look-ahead on a thread pool: ``map`` that streams and keeps the input order.

Turning a stream of entries into results where each item costs a request or a
full read (a stat, a content hash, a Parquet part) is I/O bound.
:func:`ordered_map` overlaps those calls while the consumer keeps pulling,
without reading the input ahead more than a bounded number of items, so a
listing, a manifest or a folder of Parquet parts of any size streams in
constant memory. Used by :mod:`stemflow.catalogue.listing`,
:mod:`stemflow.catalogue.manifests` and :mod:`stemflow.store.record_scan`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor, ahead: int) -> Iterator[R]:
    """``map(fn, items)`` on ``pool`` with at most ``ahead`` calls in flight, results in input order.

    Unlike ``pool.map`` it consumes ``items`` lazily, so it streams. An exception
    raised by ``fn`` surfaces when its result is reached.
    """
    in_flight: deque[Future[R]] = deque()
    for item in items:
        in_flight.append(pool.submit(fn, item))
        if len(in_flight) >= max(1, ahead):
            yield in_flight.popleft().result()
    while in_flight:
        yield in_flight.popleft().result()
