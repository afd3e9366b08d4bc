"""Segment files: where the audit log's entries live (format in ``_format``).

Plain file I/O, no SQLite: ``SegmentReader`` reads byte ranges of committed
batches; ``SegmentAppender`` writes a batch at the committed end of the
current segment and makes it durable before the batch's rows are committed.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from schemas import AuditError, ReasonCode

from ._format import segment_path

__all__ = ["SegmentAppender", "SegmentReader", "sync_directory"]

# fdatasync skips the inode's timestamps, which the log never needs back;
# where the platform lacks it (macOS), fsync does the same job.
_datasync = getattr(os, "fdatasync", os.fsync)


def _io_error(action: str, path: Path, exc: OSError) -> AuditError:
    return AuditError(
        f"audit store could not {action} {path.name}: {exc.strerror or exc}",
        code=ReasonCode.PROCESSING_ERROR,
        retriable=False,
        hint="check the disk (space, permissions) of the data directory",
    )


def sync_directory(folder: Path) -> None:
    """fsync a folder, so a file just created in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentReader:
    """Reads byte ranges of segment files; keeps them open. Not thread-safe by itself."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[int, int] = {}

    def read(self, segment: int, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer (or none) if the file is short or gone."""
        fd = self._files.get(segment)
        if fd is None:
            try:
                fd = os.open(segment_path(self.folder, segment), os.O_RDONLY)
            except FileNotFoundError:
                return b""
            except OSError as exc:
                raise _io_error("open", segment_path(self.folder, segment), exc) from None
            self._files[segment] = fd
        parts: list[bytes] = []
        while length > 0:
            try:
                chunk = os.pread(fd, min(length, 1 << 30), offset)
            except OSError as exc:
                raise _io_error("read", segment_path(self.folder, segment), exc) from None
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def forget(self) -> None:
        """Close every file (a segment may have been replaced underneath)."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    close = forget


class SegmentAppender:
    """Writes batches at the committed end of the newest segment.

    Created by the writer inside its write transaction. Bytes past the
    committed end are a batch whose commit never happened; they are cut off
    here, so the segment holds only what the ``batches`` rows describe.

    A batch is written as it is encoded: ``stream`` hands each full chunk to
    a thread that writes it while the caller encodes the next (``pwrite``
    releases the GIL; copying into the page cache was a third of an append),
    and ``finish`` writes the rest, waits, and fdatasyncs.
    """

    def __init__(self, folder: Path, segment: int, end: int) -> None:
        self.folder = folder
        self.segment = segment
        self.end = end  # the committed end of ``segment``
        self._fd = -1
        self._cursor = -1  # where the next chunk goes; -1 between batches
        self._writes: list[Future[None]] = []
        self._pool: ThreadPoolExecutor | None = None
        created = not folder.exists()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if created:
                sync_directory(folder.parent)
            self._open(segment, truncate=False)
            if os.fstat(self._fd).st_size > end:
                os.ftruncate(self._fd, end)
                _datasync(self._fd)
        except OSError as exc:
            self.close()
            raise _io_error("open", segment_path(folder, segment), exc) from None

    def _open(self, segment: int, *, truncate: bool) -> None:
        path = segment_path(self.folder, segment)
        existed = path.exists()
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        fd = os.open(path, flags, 0o640)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        if not existed:
            sync_directory(self.folder)

    def _begin(self, limit: int) -> None:
        """Start a batch: in a new segment once the current one holds ``limit`` bytes."""
        if self.end >= limit:
            try:
                # Nothing committed is in the next segment: any file there is a crashed batch.
                self._open(self.segment + 1, truncate=True)
            except OSError as exc:
                path = segment_path(self.folder, self.segment + 1)
                raise _io_error("create", path, exc) from None
            self.segment += 1
            self.end = 0
        self._cursor = self.end

    def _pwrite(self, data: bytes | bytearray, offset: int) -> None:
        try:
            with memoryview(data) as view:
                done = 0
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], offset + done)
        except OSError as exc:
            raise _io_error("write", segment_path(self.folder, self.segment), exc) from None

    def stream(self, chunk: bytearray, limit: int) -> None:
        """Queue ``chunk`` (not to be changed again) after the batch's bytes so far."""
        if self._cursor < 0:
            self._begin(limit)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="audit-segment")
        self._writes.append(self._pool.submit(self._pwrite, chunk, self._cursor))
        self._cursor += len(chunk)

    def finish(self, rest: bytearray, limit: int) -> tuple[int, int]:
        """Write ``rest``, wait for the queued chunks, fdatasync; (segment, offset) of the batch."""
        if self._cursor < 0:
            self._begin(limit)
        self._pwrite(rest, self._cursor)
        self._cursor += len(rest)
        self._wait()
        try:
            _datasync(self._fd)
        except OSError as exc:
            raise _io_error("write", segment_path(self.folder, self.segment), exc) from None
        return self.segment, self.end

    def _wait(self) -> None:
        writes, self._writes = self._writes, []
        for write in writes:
            write.result()  # re-raises the writer's AuditError

    def committed(self) -> None:
        """The batch just finished is committed: the segment now ends after it."""
        self.end = self._cursor
        self._cursor = -1

    def close(self) -> None:
        """Wait for any queued write (the file must not close under it), then close."""
        for write in self._writes:
            write.exception()
        self._writes = []
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
