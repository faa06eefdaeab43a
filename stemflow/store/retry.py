"""Bounded retries with exponential backoff and full jitter for object-store calls.

Three layers retry a failing S3 request, innermost first:

1. **botocore** (per HTTP request): ``config_kwargs={"retries": {"max_attempts": N,
   "mode": "standard" | "adaptive"}}`` in the s3fs ``storage_options``; it retries
   throttling (503 SlowDown), 5xx, connection errors and read timeouts.
   ``adaptive`` adds a client-side rate limiter that slows down under throttling.
2. **s3fs** (per call): a few quick retries of connection-level errors
   (``S3FileSystem.retries``, 5 by default) and of ``SlowDown``.
3. **stemflow** (per storage operation, this module): what escapes both, e.g. a
   connection reset in the middle of a response body, a stall past the read
   timeout on every botocore attempt, or an error s3fs translated into a plain
   ``OSError``. :func:`call_with_retry` re-runs the whole operation (a full
   PUT, a full GET) after ``min(max_delay_s, base_delay_s * multiplier**k)``
   seconds scaled by a uniform random factor in [0, 1) ("full jitter", so
   many workers throttled at once do not retry in lockstep).

Only *transient* errors are retried (:func:`is_transient`): "not found",
"already exists", permission, disk-full and invalid-argument answers are final
and surface at once. Local and ``memory://`` storage is never retried (their
errors do not go away by waiting). Each retry is logged at WARNING with the
operation, the attempt and the error (never credentials: storage options are
not part of the message).

**Deadline.** A policy also bounds the *total* time of one operation,
``deadline_s`` (default :data:`DEFAULT_DEADLINE_S`), every attempt and wait
included: botocore's timeouts apply per request and per socket read, so a
store that trickles a byte every few seconds would otherwise hold a worker for
ever. The storage layer (:mod:`stemflow.store.calls`) gives each attempt of
an async backend (S3, GCS) only the time left, and cancels it when that runs
out; an operation past its deadline is a final :class:`StorageError`.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from stemflow.errors import ConfigError, StorageError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Exception class names (anywhere in the MRO) of transient transport errors raised by
#: botocore, aiohttp, urllib3, http.client and fsspec; matched by name so that the
#: storage layer needs none of those imports.
TRANSIENT_ERROR_NAMES = frozenset({
    "ConnectionClosedError", "EndpointConnectionError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "IncompleteReadError", "HTTPClientError", "ProxyConnectionError",
    "ServerDisconnectedError", "ClientPayloadError", "ClientOSError", "ClientConnectionError",
    "ServerTimeoutError", "ProtocolError", "IncompleteRead", "RemoteDisconnected", "FSTimeoutError",
})

#: errno values that are answers, not hiccups: never retried.
FINAL_ERRNOS = frozenset({
    errno.ENOENT, errno.EEXIST, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT,
    errno.EINVAL, errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR,
})


DEFAULT_DEADLINE_S = 900.0
"""Total seconds one storage operation may take by default (15 minutes: 2 GiB at 2.4 MB/s)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one storage operation is retried.

    Attributes:
        attempts: total tries including the first (1 = no retry).
        base_delay_s: backoff ceiling before the first retry, in seconds.
        multiplier: growth of the ceiling per retry.
        max_delay_s: cap of the ceiling.
        deadline_s: total seconds one operation may take, attempts and waits included
            (``None``: unbounded).

    The wait before retry ``k`` (0-based) is uniform in
    ``[0, min(max_delay_s, base_delay_s * multiplier**k))``. With the defaults
    (4 attempts, 0.25 s, x2, 8 s) an operation gives up after at most
    0.25 + 0.5 + 1.0 = 1.75 s of waiting plus the attempts themselves.
    """

    attempts: int = 4
    base_delay_s: float = 0.25
    multiplier: float = 2.0
    max_delay_s: float = 8.0
    deadline_s: float | None = DEFAULT_DEADLINE_S

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"retry attempts must be >= 1, got {self.attempts}")
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ConfigError(f"the storage deadline must be > 0 seconds (or None), got {self.deadline_s}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ConfigError("retry delays must be >= 0 and the multiplier >= 1")

    def ceiling_s(self, retry_index: int) -> float:
        """Upper bound of the wait before retry ``retry_index`` (0-based), in seconds."""
        return min(self.max_delay_s, self.base_delay_s * self.multiplier**retry_index)

    def delay_s(self, retry_index: int, rng: random.Random) -> float:
        """A full-jitter wait before retry ``retry_index``: uniform in ``[0, ceiling)``."""
        return rng.random() * self.ceiling_s(retry_index)


DEFAULT_RETRY = RetryPolicy()
"""The policy storage functions use when given none."""

NO_RETRY = RetryPolicy(attempts=1)
"""Fail on the first error (for callers that retry at a higher level)."""


class Deadline:
    """The time left to one operation: started at construction, ``None`` seconds for no bound."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = None if seconds is None else clock() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never below 0), or ``None`` when unbounded."""
        return None if self._end is None else max(0.0, self._end - self._clock())

    def expired(self) -> bool:
        """Whether the time is up."""
        left = self.remaining()
        return left is not None and left <= 0.0


def is_transient(error: BaseException) -> bool:
    """Whether waiting and trying again may help: timeouts, resets, throttling, 5xx, EIO.

    Final (``False``): not found, already exists, permission denied, disk full,
    read-only filesystem, invalid arguments, and any non-I/O exception.
    """
    if isinstance(error, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
                          NotADirectoryError)):
        return False
    if any(cls.__name__ in TRANSIENT_ERROR_NAMES for cls in type(error).__mro__):
        return True
    if isinstance(error, (TimeoutError, ConnectionError)):
        return True
    if isinstance(error, OSError):
        return error.errno not in FINAL_ERRNOS
    return False


def call_with_retry(
    operation: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_RETRY,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
    deadline: Deadline | None = None,
) -> T:
    """Run ``operation`` until it succeeds, fails finally, or ``policy.attempts`` are used.

    Args:
        operation: the whole idempotent operation (one PUT, one GET…), no arguments.
        what: short description for logs and the final error, e.g. ``"write s3://b/k"``.
        policy: attempts and backoff.
        rng: jitter source; a fresh ``random.Random()`` (seeded by the OS) if ``None``.
        sleep: the wait function (tests pass a recorder).
        deadline: the operation's overall time limit, shared with ``operation`` (which
            should give its requests only ``deadline.remaining()``); by default one of
            ``policy.deadline_s`` started now, checked between attempts.

    Raises:
        the operation's own exception at once if it is not transient;
        StorageError: transient failures on every attempt (chained to the last one), or
            the deadline passed.
    """
    jitter = rng if rng is not None else random.Random()
    deadline = deadline if deadline is not None else Deadline(policy.deadline_s)
    for attempt in range(policy.attempts):
        try:
            return operation()
        except Exception as e:  # noqa: BLE001 - classified below; final errors re-raised as they are
            if not is_transient(e):
                raise
            if deadline.expired():
                raise StorageError(
                    f"{what} gave up at its deadline of {deadline.seconds:g} s, after {attempt + 1} "
                    f"attempt(s): {type(e).__name__}: {e}"
                ) from e
            if attempt + 1 >= policy.attempts:
                raise StorageError(
                    f"{what} failed after {policy.attempts} attempts: {type(e).__name__}: {e}"
                ) from e
            left = deadline.remaining()
            wait = policy.delay_s(attempt, jitter) if left is None else min(left, policy.delay_s(attempt, jitter))
            logger.warning("%s: attempt %d/%d failed (%s: %s); retrying in %.2f s",
                           what, attempt + 1, policy.attempts, type(e).__name__, e, wait)
            sleep(wait)
    raise StorageError(f"{what}: no attempt made")  # unreachable: attempts >= 1
