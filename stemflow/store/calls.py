"""One call to a filesystem, bounded: retries, an overall deadline, and only regular local files.

Every request :mod:`stemflow.store.objects` and :mod:`stemflow.store.streams` make
goes through :func:`call`:

* **Remote backends** (S3, GCS, …) run under the caller's
  :class:`~stemflow.store.retry.RetryPolicy`: transient failures are retried, and
  the whole operation, all attempts and waits included, must end within the
  policy's ``deadline_s``. On async backends (s3fs, gcsfs, adlfs) each attempt
  runs the backend's coroutine with only the time left
  (:func:`fsspec.asyn.sync` with ``timeout=``, which cancels it), so a store
  that trickles bytes, stalls between packets or never answers cannot hold a
  worker past the deadline. Other remote backends are bounded between attempts only.
* **Local and memory** storage is called once (its errors do not go away by
  waiting). Local *reads* open the path with ``O_NONBLOCK`` and refuse anything
  that is not a regular file (:func:`open_regular_file`): a FIFO would block the
  reader for ever, ``/dev/zero`` or ``/dev/urandom`` never end, a socket cannot
  be read. A link is followed to what it names, which must be a regular file too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fsspec import AbstractFileSystem
from fsspec.asyn import AsyncFileSystem, sync

from stemflow.files import describe_mode, open_regular_file
from stemflow.store.paths import is_local_fs, is_memory_fs
from stemflow.store.retry import DEFAULT_RETRY, Deadline, RetryPolicy, call_with_retry

T = TypeVar("T")

_SMALLEST_TIMEOUT_S = 0.001  # fsspec's sync() reads a timeout of 0 as "no timeout"


def is_remote(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is neither the local disk nor ``memory://`` (it gets retries and a deadline)."""
    return not (is_local_fs(fs) or is_memory_fs(fs))


def invoke(fs: AbstractFileSystem, method: str, *args: Any, deadline: Deadline | None = None, **kwargs: Any) -> Any:
    """``fs.<method>(*args, **kwargs)``; on an async backend its coroutine, cancelled at the deadline."""
    coroutine = getattr(fs, f"_{method}", None)
    if isinstance(fs, AsyncFileSystem) and fs.loop is not None and callable(coroutine) and not fs.asynchronous:
        left = deadline.remaining() if deadline is not None else None
        timeout = None if left is None else max(left, _SMALLEST_TIMEOUT_S)
        return sync(fs.loop, coroutine, *args, timeout=timeout, **kwargs)
    return getattr(fs, method)(*args, **kwargs)


def call(
    fs: AbstractFileSystem, what: str, method: str, *args: Any, retry: RetryPolicy | None = None,
    deadline: Deadline | None = None, **kwargs: Any,
) -> Any:
    """``fs.<method>(*args, **kwargs)`` once (local, memory), or under the retry policy and its deadline (remote).

    ``deadline`` lets several calls share one operation's time (a streamed read
    of many blocks); by default each call has its own, ``retry.deadline_s`` long.
    """
    if not is_remote(fs):
        return getattr(fs, method)(*args, **kwargs)
    return run(fs, what, lambda limit: invoke(fs, method, *args, deadline=limit, **kwargs), retry, deadline)


def run(fs: AbstractFileSystem, what: str, operation: Callable[[Deadline], T], retry: RetryPolicy | None,
        deadline: Deadline | None = None) -> T:
    """``operation(deadline)`` under the retry policy (remote) or once (local, memory)."""
    policy = retry or DEFAULT_RETRY
    limit = deadline if deadline is not None else Deadline(policy.deadline_s)
    if not is_remote(fs):
        return operation(limit)
    return call_with_retry(lambda: operation(limit), what=what, policy=policy, deadline=limit)


__all__ = ["call", "describe_mode", "invoke", "is_remote", "open_regular_file", "run"]
