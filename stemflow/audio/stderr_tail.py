"""A child process's messages, drained as they come and kept to a bounded tail.

ffmpeg writes a line per damaged frame: a long hostile input can make it write
gigabytes to stderr. Captured whole (``subprocess.run(capture_output=True)``)
that is memory, spooled to a temporary file it is disk; a pipe nobody reads
fills and blocks the child. :class:`StderrTail` hands the child one end of a
pipe and reads the other on a thread, keeping the number of lines and the last
:data:`KEEP_LINES` of them (each cut to :data:`MAX_LINE_BYTES`): memory is
bounded whatever the child writes, and nothing reaches the disk.

    with StderrTail() as errors:
        process = subprocess.Popen(args, stderr=errors)
        errors.child_started()
        ...
        process.wait()
        errors.finish()
        errors.last, errors.count
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from types import TracebackType

KEEP_LINES = 20
"""How many of the last lines are kept."""

MAX_LINE_BYTES = 2048
"""A longer line is kept as its last this many bytes (a line without a newline cannot grow memory)."""

READ_BYTES = 64 * 1024
"""Bytes per read of the pipe."""

JOIN_TIMEOUT_S = 10.0
"""How long :meth:`StderrTail.finish` waits for the end of the messages (a child that handed its stderr
to a process still running would otherwise keep it open for ever)."""


class StderrTail:
    """The write end of a pipe for a child's stderr (pass it as ``stderr=``), drained on a thread."""

    def __init__(self, keep_lines: int = KEEP_LINES) -> None:
        read_fd, self._write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._tail: deque[bytes] = deque(maxlen=keep_lines)
        self.count = 0
        """Lines written so far (a last line without a newline counts once the pipe ends)."""
        self._thread = threading.Thread(target=self._drain, name="stderr-tail", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """The pipe's write end, for ``subprocess.Popen(stderr=...)``."""
        if self._write_fd < 0:
            raise ValueError("the child has been started: the write end is closed")
        return self._write_fd

    def child_started(self) -> None:
        """Close this process's copy of the write end, so the pipe ends when the child does."""
        if self._write_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._write_fd)
            self._write_fd = -1

    def _drain(self) -> None:
        pending = b""
        try:
            while chunk := self._reader.read(READ_BYTES):
                *complete, pending = (pending + chunk).split(b"\n")
                for line in complete:
                    self._add(line)
                pending = pending[-MAX_LINE_BYTES:]
        except (OSError, ValueError):  # the reader was closed under us: the owner is done with it
            return
        if pending:
            self._add(pending)

    def _add(self, line: bytes) -> None:
        self.count += 1
        if line.strip():
            self._tail.append(line[-MAX_LINE_BYTES:])

    def finish(self, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Wait for the end of the messages (the child has exited); at most ``timeout_s``."""
        self.child_started()
        self._thread.join(timeout_s)

    @property
    def lines(self) -> list[str]:
        """The last non-blank lines kept, oldest first, decoded (undecodable bytes replaced)."""
        return [line.decode("utf-8", "replace").strip() for line in list(self._tail)]

    @property
    def last(self) -> str | None:
        """The last non-blank line, or None."""
        lines = self.lines
        return lines[-1] if lines else None

    def close(self) -> None:
        """Close both ends (idempotent); the draining thread ends."""
        self.child_started()
        self._thread.join(JOIN_TIMEOUT_S)
        with contextlib.suppress(OSError):
            self._reader.close()

    def __enter__(self) -> StderrTail:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
