"""A party's append-only audit log on disk, with its Merkle tree and signed checkpoints.

Files in the log directory:

- ``log.bin``: the entries, each framed as ``u32 length || u32 crc32 || entry bytes``.
- ``checkpoint``: the latest published checkpoint (a C2SP signed note), replaced atomically
  (write, fsync, rename, fsync of the directory).

Durability: :meth:`AuditLog.append` returns only after the entry is on disk (``fsync``).
Concurrent appenders share one ``fsync`` (group commit): the first waiter flushes everything
written so far and wakes the others, so throughput grows with concurrency instead of being
one fsync per entry. A checkpoint only ever covers durable entries.

Crash safety: on open the file is scanned, the tree rebuilt and compared with the last
checkpoint; a log that is shorter than its checkpoint or whose root differs is refused
(:class:`AuditIntegrityError`), so a party never extends a history it cannot vouch for.
Only a torn final record (a write interrupted by a crash, never acknowledged) is cut off,
and only when it lies beyond the checkpoint. Indices are positions, so no index is reused.
If a write or fsync fails, the log stops accepting entries (fail closed) until reopened.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path

from fedmatch.audit.entry import MAX_ENTRY_BYTES, AuditEvent, SignedEntry, encode_entry
from fedmatch.audit.errors import AuditIntegrityError, AuditVerificationError
from fedmatch.audit.merkle import MerkleTree, leaf_hash
from fedmatch.audit.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint, sign_note
from fedmatch.errors import InvalidInput
from fedmatch.fileio import write_atomically

__all__ = ["CHECKPOINT_FILE", "LOG_FILE", "AuditLog", "scan_records"]

log = logging.getLogger("fedmatch.audit")

LOG_FILE = "log.bin"
CHECKPOINT_FILE = "checkpoint"
_FRAME = struct.Struct(">II")
# A read of entries is bounded so one request cannot make the party read its whole log.
MAX_ENTRIES_PER_READ = 1000


def scan_records(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """(offset, length) of each complete, CRC-valid record, and the end of the last one.

    Scanning stops at the first frame that is short, oversize or fails its CRC: the caller
    decides whether that is a torn tail (acceptable beyond the checkpoint) or damage.
    """
    records: list[tuple[int, int]] = []
    pos, end = 0, len(data)
    while pos + _FRAME.size <= end:
        length, crc = _FRAME.unpack_from(data, pos)
        start = pos + _FRAME.size
        if length == 0 or length > MAX_ENTRY_BYTES or start + length > end:
            break
        if zlib.crc32(data[start : start + length]) != crc:
            break
        records.append((start, length))
        pos = start + length
    return records, pos


class AuditLog:
    """One party's log. Thread-safe; one process per directory."""

    def __init__(
        self,
        directory: Path,
        signer: NoteSigner,
        origin: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.origin = origin
        self.signer = signer
        self.verifier = NoteVerifier.from_vkey(signer.vkey())
        self._clock = clock
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / LOG_FILE
        self._checkpoint_path = directory / CHECKPOINT_FILE
        self._lock = threading.Lock()  # orders numbering, signing and writing
        # Group commit: appenders write under _lock, then wait on _done; one flusher thread
        # fsyncs whatever has been written as soon as the previous fsync returns, so the
        # disk never waits for a woken appender to take its turn.
        self._sync = threading.Lock()
        self._work = threading.Condition(self._sync)
        self._done = threading.Condition(self._sync)
        self._closing = False
        self._checkpoint_lock = threading.Lock()
        self._tree = MerkleTree()
        self._offsets = array("Q")
        self._lengths = array("I")
        self._broken: str | None = None
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            self._recover()
        except BaseException:
            os.close(self._fd)
            raise
        self._durable = self._written = len(self._tree)
        self._end = os.lseek(self._fd, 0, os.SEEK_END)
        self._flusher = threading.Thread(target=self._flush, name="audit-fsync", daemon=True)
        self._flusher.start()
        if self._published is None:
            self.checkpoint()  # the empty tree, before any entry

    # -- opening -----------------------------------------------------------------------

    def _recover(self) -> None:
        with open(self._path, "rb") as f:
            data = f.read()
        records, end = scan_records(data)
        for start, length in records:
            self._offsets.append(start)
            self._lengths.append(length)
            self._tree.append(leaf_hash(data[start : start + length]))
        published = self._read_checkpoint()
        n = len(self._tree)
        if published is not None:
            if published.size > n:
                raise AuditIntegrityError(
                    f"audit log {self._path} has {n} readable entries but its last checkpoint "
                    f"covers {published.size}: entries were removed or damaged"
                )
            if self._tree.root(published.size) != published.root:
                raise AuditIntegrityError(
                    f"audit log {self._path} does not match its last checkpoint "
                    f"(size {published.size}): entries were altered"
                )
        if len(data) - end > _FRAME.size + MAX_ENTRY_BYTES:
            raise AuditIntegrityError(
                f"audit log {self._path} is damaged after entry {n}: "
                f"{len(data) - end} unreadable bytes follow, more than one torn record"
            )
        if published is None and len(data):
            # A new log publishes its empty checkpoint before its first entry, so a log
            # with entries and no checkpoint has lost it: refuse rather than re-sign
            # whatever the file now holds.
            raise AuditIntegrityError(
                f"audit log {self._path} has entries but its checkpoint is missing"
            )
        if end < len(data):
            # Only a crash during the last write leaves bytes after the last good record,
            # and those bytes were never acknowledged; everything up to the checkpoint
            # is intact (checked above), so cutting them off loses nothing.
            log.warning(
                "audit log %s: dropping a torn final record (%d bytes) after entry %d",
                self._path,
                len(data) - end,
                n,
            )
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
        self._published = published

    def _read_checkpoint(self) -> Checkpoint | None:
        try:
            text = self._checkpoint_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            checkpoint, _ = open_checkpoint(text, self.verifier, self.origin)
        except AuditVerificationError as exc:
            raise AuditIntegrityError(
                f"audit checkpoint {self._checkpoint_path} does not verify: {exc}"
            ) from None
        return checkpoint

    def close(self) -> None:
        with self._sync:
            self._closing = True
            self._work.notify()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=30)
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self._broken = self._broken or "closed"

    # -- appending ---------------------------------------------------------------------

    def append(self, event: AuditEvent) -> SignedEntry:
        """Number, sign and durably write ``event``; returns the entry once it is on disk."""
        with self._lock:
            if self._broken is not None:
                raise AuditIntegrityError(f"audit log is not writable ({self._broken})")
            seq = len(self._tree)
            entry = encode_entry(self.signer, self.origin, seq, int(self._clock() * 1000), event)
            frame = _FRAME.pack(len(entry.raw), zlib.crc32(entry.raw)) + entry.raw
            try:
                written = os.write(self._fd, frame)
                if written != len(frame):
                    raise OSError("short write")
            except OSError as exc:
                self._fail(f"write failed: {type(exc).__name__}")
                raise AuditIntegrityError("audit log write failed; entry not recorded") from None
            self._offsets.append(self._end + _FRAME.size)
            self._lengths.append(len(entry.raw))
            self._end += len(frame)
            self._tree.append(leaf_hash(entry.raw))
            with self._sync:
                # Entries are written in order, so everything below seq + 1 is in the file.
                self._written = max(self._written, seq + 1)
                self._work.notify()
        with self._sync:
            while self._durable <= seq:
                if self._broken is not None:
                    raise AuditIntegrityError(f"audit log is not writable ({self._broken})")
                self._done.wait()
        return entry

    def _fail(self, why: str) -> None:
        """Stop accepting entries (called with _lock held); wakes everyone waiting."""
        self._broken = why
        log.error("audit log %s is no longer writable: %s", self._path, why)
        with self._sync:
            self._work.notify()
            self._done.notify_all()

    def _flush(self) -> None:
        while True:
            with self._sync:
                while self._written <= self._durable and not self._closing:
                    self._work.wait()
                if self._broken is not None or self._written <= self._durable:
                    self._done.notify_all()
                    return  # closing with nothing left, or no longer writable
                target = self._written
            try:
                os.fsync(self._fd)
            except OSError as exc:
                with self._lock:
                    self._fail(f"fsync failed: {type(exc).__name__}")
                return
            with self._sync:
                self._durable = target
                self._done.notify_all()

    # -- reading -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Entries durably written (what a checkpoint may cover)."""
        with self._sync:
            return self._durable

    def root(self, size: int) -> bytes:
        self._check_size(size)
        with self._lock:
            return self._tree.root(size)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise InvalidInput(f"tree size {size} is beyond the log's {self.size} entries")

    def entries(self, start: int, end: int) -> list[bytes]:
        """Raw entries [start, end), read from disk (at most MAX_ENTRIES_PER_READ)."""
        if not 0 <= start <= end <= self.size:
            raise InvalidInput(f"entries [{start}, {end}) are not within the log's {self.size}")
        end = min(end, start + MAX_ENTRIES_PER_READ)
        with self._lock:
            spans = [(self._offsets[i], self._lengths[i]) for i in range(start, end)]
            fd = self._fd
        if fd < 0:
            raise AuditIntegrityError("audit log is closed")
        return [os.pread(fd, length, offset) for offset, length in spans]

    def iter_entries(self, start: int = 0) -> Iterator[SignedEntry]:
        pos = start
        while pos < self.size:
            batch = self.entries(pos, self.size)
            for raw in batch:
                yield SignedEntry.decode(raw)
            pos += len(batch)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        if not 0 <= index < size:
            raise InvalidInput(f"index {index} is not in a tree of {size} entries")
        with self._lock:
            return self._tree.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        self._check_size(size2)
        if not 0 <= size1 <= size2:
            raise InvalidInput(f"no consistency proof from size {size1} to size {size2}")
        with self._lock:
            return self._tree.consistency_proof(size1, size2)

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """Publish (if the log grew) and return the signed checkpoint of the durable log."""
        with self._checkpoint_lock:
            size = self.size
            if self._published is not None and self._published.size == size:
                return self._checkpoint_path.read_bytes()
            checkpoint = Checkpoint(self.origin, size, self.root(size))
            text = sign_note(checkpoint.body(), self.signer)
            write_atomically(self._checkpoint_path, text)
            self._published = checkpoint
            return text

    def latest_checkpoint(self) -> bytes | None:
        with self._checkpoint_lock:
            if self._published is None:
                return None
            return self._checkpoint_path.read_bytes()
