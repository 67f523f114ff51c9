"""A party's audit log on disk (fedmatch.audit.log): appends, proofs, checkpoints, recovery,
tamper detection, fault injection at every system call, group commit and a real crash."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedmatch.audit.entry import (
    MAX_ENTRY_BYTES,
    AuditEvent,
    EventKind,
    SignedEntry,
    encode_entry,
)
from fedmatch.audit.errors import AuditIntegrityError
from fedmatch.audit.log import CHECKPOINT_FILE, LOG_FILE, AuditLog, scan_records
from fedmatch.audit.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from fedmatch.audit.note import Checkpoint, NoteSigner, open_checkpoint, sign_note
from fedmatch.errors import InvalidInput

REPO_ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "fedmatch/node/IT"
SIGNER = NoteSigner.generate(ORIGIN)
VERIFIER = SIGNER.verifier()
FRAME = struct.Struct(">II")


def event(i: int, padding: int = 0) -> AuditEvent:
    labels = {"pad": "p" * padding} if padding else {}
    return AuditEvent(EventKind.SEARCH_REQUESTED, query_id=f"q-{i}", labels=labels)


def open_log(directory: Path, clock: Callable[[], float] = time.time) -> AuditLog:
    return AuditLog(directory, SIGNER, ORIGIN, clock)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def alog(log_dir: Path) -> Iterator[AuditLog]:
    log = open_log(log_dir)
    yield log
    log.close()


def fill(log: AuditLog, n: int, start: int = 0, padding: int = 0) -> list[SignedEntry]:
    return [log.append(event(start + i, padding)) for i in range(n)]


def frames(data: bytes) -> list[bytes]:
    """The complete frames of a log file, header included."""
    records, end = scan_records(data)
    assert end == len(data)
    return [data[start - FRAME.size : start + length] for start, length in records]


def frame(raw: bytes) -> bytes:
    return FRAME.pack(len(raw), zlib.crc32(raw)) + raw


def assert_sound(directory: Path, acked: dict[int, bytes]) -> AuditLog:
    """Reopen (which re-verifies against the last checkpoint) and check the whole log:
    contiguous indices, every acknowledged entry present with its bytes, a fresh append
    numbered after the last entry. Returns the open log."""
    log = open_log(directory)
    size = log.size
    assert all(seq < size for seq in acked)
    raws = [raw for start in range(0, size, 1000) for raw in log.entries(start, size)]
    assert len(raws) == size
    for seq, raw in acked.items():
        assert raws[seq] == raw, f"acknowledged entry {seq} changed or was lost"
    entries = list(log.iter_entries())
    assert [e.seq for e in entries] == list(range(size))
    for e in entries:
        e.verify(VERIFIER)
    assert log.root(size) == root_of([leaf_hash(r) for r in raws])
    published = log.latest_checkpoint()
    if published is not None:
        checkpoint, _ = open_checkpoint(published, VERIFIER, ORIGIN)
        assert checkpoint.size <= size
        assert checkpoint.root == log.root(checkpoint.size)
    new = log.append(event(10_000))
    assert new.seq == size
    return log


# --- appending, reading, proofs, checkpoints ---------------------------------------------------


def test_append_numbers_entries_in_order(alog: AuditLog) -> None:
    assert alog.size == 0
    assert alog.root(0) == EMPTY_ROOT
    entries = fill(alog, 5)
    assert [e.seq for e in entries] == [0, 1, 2, 3, 4]
    assert alog.size == 5
    for e in entries:
        assert e.party == ORIGIN
        e.verify(VERIFIER)
    assert alog.entries(0, 5) == [e.raw for e in entries]
    assert alog.entries(2, 4) == [entries[2].raw, entries[3].raw]
    assert alog.entries(5, 5) == []
    assert [e.raw for e in alog.iter_entries()] == [e.raw for e in entries]
    assert [e.seq for e in alog.iter_entries(3)] == [3, 4]
    assert [e.event.query_id for e in alog.iter_entries()] == [f"q-{i}" for i in range(5)]


def test_entries_use_the_clock(log_dir: Path) -> None:
    log = open_log(log_dir, clock=lambda: 1_767_225_600.5)
    try:
        entry = log.append(event(0))
        assert entry.unix_ms == 1_767_225_600_500
        assert SignedEntry.decode(log.entries(0, 1)[0]).time == "2026-01-01T00:00:00.500Z"
    finally:
        log.close()


@pytest.mark.parametrize(("start", "end"), [(-1, 0), (0, 4), (3, 2), (4, 4)])
def test_entries_refuses_ranges_outside_the_log(alog: AuditLog, start: int, end: int) -> None:
    fill(alog, 3)
    with pytest.raises(InvalidInput, match="are not within the log's 3"):
        alog.entries(start, end)


def test_proofs_and_roots_refuse_sizes_beyond_the_log(alog: AuditLog) -> None:
    fill(alog, 3)
    with pytest.raises(InvalidInput, match="beyond the log's 3 entries"):
        alog.root(4)
    with pytest.raises(InvalidInput, match="beyond the log's 3 entries"):
        alog.inclusion_proof(0, 4)
    with pytest.raises(InvalidInput, match="index 3 is not in a tree of 3"):
        alog.inclusion_proof(3, 3)
    with pytest.raises(InvalidInput, match="no consistency proof from size 3 to size 2"):
        alog.consistency_proof(3, 2)


def test_proofs_verify(alog: AuditLog) -> None:
    raws = [e.raw for e in fill(alog, 23)]
    for size in (1, 2, 7, 8, 16, 23):
        root = alog.root(size)
        assert root == root_of([leaf_hash(r) for r in raws[:size]])
        for index in range(size):
            proof = alog.inclusion_proof(index, size)
            verify_inclusion(leaf_hash(raws[index]), index, size, proof, root)
        for size1 in range(1, size + 1):
            proof = alog.consistency_proof(size1, size)
            verify_consistency(size1, size, proof, alog.root(size1), root)


def test_checkpoint_signs_the_durable_size_and_is_stable(alog: AuditLog) -> None:
    empty, _ = open_checkpoint(alog.latest_checkpoint() or b"", VERIFIER, ORIGIN)
    assert empty.size == 0  # a new log publishes its empty tree before any entry
    fill(alog, 6)
    text = alog.checkpoint()
    checkpoint, note = open_checkpoint(text, VERIFIER, ORIGIN)
    assert checkpoint == Checkpoint(ORIGIN, 6, alog.root(6))
    assert [s.name for s in note.signatures] == [ORIGIN]
    assert alog.checkpoint() == text  # nothing changed: the same note, not a re-signature
    assert alog.latest_checkpoint() == text
    assert (alog.directory / CHECKPOINT_FILE).read_bytes() == text
    fill(alog, 2, start=6)
    grown = alog.checkpoint()
    assert grown != text
    new, _ = open_checkpoint(grown, VERIFIER, ORIGIN)
    assert new.size == 8
    verify_consistency(6, 8, alog.consistency_proof(6, 8), checkpoint.root, new.root)


def test_checkpoint_of_an_empty_log(alog: AuditLog) -> None:
    checkpoint, _ = open_checkpoint(alog.checkpoint(), VERIFIER, ORIGIN)
    assert (checkpoint.size, checkpoint.root) == (0, EMPTY_ROOT)


def test_checkpoint_file_is_replaced_atomically(alog: AuditLog) -> None:
    fill(alog, 2)
    alog.checkpoint()
    fill(alog, 1, start=2)
    alog.checkpoint()
    names = sorted(p.name for p in alog.directory.iterdir())
    assert names == [CHECKPOINT_FILE, LOG_FILE]


# --- reopening ---------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpointed", [True, False])
def test_reopen_continues_the_log(log_dir: Path, checkpointed: bool) -> None:
    log = open_log(log_dir)
    raws = [e.raw for e in fill(log, 9)]
    if checkpointed:
        log.checkpoint()
    root = log.root(9)
    log.close()
    with pytest.raises(AuditIntegrityError, match="not writable"):
        log.append(event(99))
    with pytest.raises(AuditIntegrityError, match="closed"):
        log.entries(0, 1)

    log = open_log(log_dir)
    try:
        assert log.size == 9
        assert log.root(9) == root
        assert log.entries(0, 9) == raws
        latest, _ = open_checkpoint(log.latest_checkpoint() or b"", VERIFIER, ORIGIN)
        assert latest.size == (9 if checkpointed else 0)
        assert log.append(event(9)).seq == 9  # no index is reused
        assert log.size == 10
        assert log.root(9) == root
    finally:
        log.close()


# --- tampering ---------------------------------------------------------------------------------


def make_log(directory: Path, checkpointed: int, extra: int = 0) -> list[bytes]:
    log = open_log(directory)
    raws = [e.raw for e in fill(log, checkpointed)]
    log.checkpoint()
    raws += [e.raw for e in fill(log, extra, start=checkpointed)]
    log.close()
    return raws


def rewrite(directory: Path, edit: Callable[[list[bytes]], list[bytes]]) -> None:
    path = directory / LOG_FILE
    path.write_bytes(b"".join(edit(frames(path.read_bytes()))))


def flip(frame_bytes: bytes, position: int, fix_crc: bool) -> bytes:
    raw = bytearray(frame_bytes[FRAME.size :])
    raw[position] ^= 0x01
    if fix_crc:
        return frame(bytes(raw))
    return frame_bytes[: FRAME.size] + bytes(raw)


@pytest.mark.parametrize(
    ("fix_crc", "message"),
    [
        (False, "has 3 readable entries but its last checkpoint covers 10"),
        (True, r"does not match its last checkpoint \(size 10\): entries were altered"),
    ],
)
def test_edited_entry_is_detected(log_dir: Path, fix_crc: bool, message: str) -> None:
    make_log(log_dir, 10, extra=2)
    rewrite(log_dir, lambda fs: [*fs[:3], flip(fs[3], 40, fix_crc), *fs[4:]])
    with pytest.raises(AuditIntegrityError, match=message):
        open_log(log_dir)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (0, "has 9 readable entries but its last checkpoint covers 10: entries were removed"),
        (3, "does not match its last checkpoint"),
    ],
)
def test_deleted_entry_is_detected(log_dir: Path, extra: int, message: str) -> None:
    make_log(log_dir, 10, extra=extra)
    rewrite(log_dir, lambda fs: fs[:4] + fs[5:])
    with pytest.raises(AuditIntegrityError, match=message):
        open_log(log_dir)


def test_swapped_entries_are_detected(log_dir: Path) -> None:
    make_log(log_dir, 10)
    rewrite(log_dir, lambda fs: [fs[0], fs[5], *fs[2:5], fs[1], *fs[6:]])
    with pytest.raises(AuditIntegrityError, match="entries were altered"):
        open_log(log_dir)


def test_replaced_entry_signed_by_the_party_is_detected(log_dir: Path) -> None:
    # Even a well-formed, validly signed entry with the right index is an alteration.
    make_log(log_dir, 10)
    forged = encode_entry(SIGNER, ORIGIN, 7, 0, event(777))
    rewrite(log_dir, lambda fs: [*fs[:7], frame(forged.raw), *fs[8:]])
    with pytest.raises(AuditIntegrityError, match="entries were altered"):
        open_log(log_dir)


@pytest.mark.parametrize("cut", ["mid-frame", "frame-boundary", "empty"])
def test_truncation_before_the_checkpoint_is_detected(log_dir: Path, cut: str) -> None:
    make_log(log_dir, 10, extra=2)
    path = log_dir / LOG_FILE
    data = path.read_bytes()
    records, _ = scan_records(data)
    start, length = records[6]
    at = {"mid-frame": start + length // 2, "frame-boundary": start - FRAME.size, "empty": 0}[cut]
    path.write_bytes(data[:at])
    with pytest.raises(AuditIntegrityError, match="last checkpoint covers 10"):
        open_log(log_dir)


@pytest.mark.parametrize("how", ["other-key", "flipped-signature", "edited-size", "garbage"])
def test_tampered_checkpoint_is_detected(log_dir: Path, how: str) -> None:
    make_log(log_dir, 10)
    path = log_dir / CHECKPOINT_FILE
    text = path.read_bytes()
    body = text[: text.index(b"\n\n") + 1]
    if how == "other-key":
        tampered = sign_note(body, NoteSigner.generate(ORIGIN))
    elif how == "flipped-signature":
        tampered = text[:-6] + (b"A" if text[-6:-5] != b"A" else b"B") + text[-5:]
    elif how == "edited-size":
        tampered = text.replace(b"\n10\n", b"\n9\n", 1)
    else:
        tampered = b"not a note\n"
    assert tampered != text
    path.write_bytes(tampered)
    with pytest.raises(AuditIntegrityError, match=r"checkpoint .* does not verify"):
        open_log(log_dir)


def test_checkpoint_of_another_origin_is_refused(log_dir: Path) -> None:
    make_log(log_dir, 3)
    with pytest.raises(AuditIntegrityError, match="does not verify"):
        AuditLog(log_dir, SIGNER, "fedmatch/node/FR")


def test_damage_beyond_the_checkpoint_followed_by_records_is_refused(log_dir: Path) -> None:
    # More than one record's worth of bytes after the damage cannot be a torn final write.
    log = open_log(log_dir)
    fill(log, 5)
    log.checkpoint()
    fill(log, 3, start=5)
    n = 8
    while os.path.getsize(log_dir / LOG_FILE) < 2 * (MAX_ENTRY_BYTES + FRAME.size) + 4096:
        fill(log, 1, start=n, padding=250)
        n += 1
    log.close()
    rewrite(log_dir, lambda fs: [*fs[:6], flip(fs[6], 10, fix_crc=False), *fs[7:]])
    with pytest.raises(AuditIntegrityError, match=r"damaged after entry 6: .* more than one torn"):
        open_log(log_dir)


# --- torn tail ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    ["first-10-bytes", "header-only-part", "full-frame-bad-crc", "length-beyond-eof"],
)
def test_torn_final_record_is_dropped(log_dir: Path, tail: str) -> None:
    raws = make_log(log_dir, 10, extra=2)
    path = log_dir / LOG_FILE
    intact = path.read_bytes()
    other_dir = log_dir.parent / "other"
    next_frame = frame(make_log(other_dir, 13)[12])
    torn = {
        "first-10-bytes": next_frame[:10],
        "header-only-part": next_frame[:5],
        "full-frame-bad-crc": next_frame[:-1] + bytes([next_frame[-1] ^ 0xFF]),
        "length-beyond-eof": next_frame[:-20],
    }[tail]
    path.write_bytes(intact + torn)

    log = assert_sound(log_dir, dict(enumerate(raws)))
    try:
        assert log.size == 13  # 12 entries + the fresh one from assert_sound
        assert path.read_bytes()[: len(intact)] == intact
        assert scan_records(path.read_bytes())[1] == path.stat().st_size
    finally:
        log.close()


def test_torn_record_without_any_checkpoint(log_dir: Path) -> None:
    log = open_log(log_dir)
    raws = [e.raw for e in fill(log, 4)]
    log.close()
    path = log_dir / LOG_FILE
    intact = path.read_bytes()
    with path.open("ab") as f:
        f.write(frame(raws[0])[:10])
    log = assert_sound(log_dir, dict(enumerate(raws)))
    fresh = log.entries(4, 5)[0]
    log.close()
    # The torn bytes were cut before the fresh entry was appended.
    assert path.read_bytes() == intact + frame(fresh)


# --- fault injection ---------------------------------------------------------------------------


class Fault:
    """Wraps an os function: counts calls and fails the k-th one (k = -1: never)."""

    def __init__(self, real: Callable[..., Any], fail_at: int, mode: str) -> None:
        self.real = real
        self.fail_at = fail_at
        self.mode = mode
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        k = self.calls
        self.calls += 1
        if k != self.fail_at:
            return self.real(*args)
        if self.mode == "short":
            fd, data = args
            return self.real(fd, data[: len(data) // 2])
        raise OSError(5, "injected I/O error")


APPENDS = 9


def workload(log: AuditLog, acked: dict[int, bytes]) -> tuple[str, int] | None:
    """Appends with a checkpoint after every third; stops at the first failure of an
    append. Returns which operation failed (and at which step), if any."""
    failed: tuple[str, int] | None = None
    for i in range(APPENDS):
        try:
            entry = log.append(event(i))
        except AuditIntegrityError:
            return ("append", i)
        acked[entry.seq] = entry.raw
        if i % 3 == 2:
            try:
                log.checkpoint()
            except OSError:
                failed = failed or ("checkpoint", i)
    return failed


@pytest.mark.parametrize(
    ("function", "mode"),
    [("write", "raise"), ("write", "short"), ("fsync", "raise"), ("replace", "raise")],
)
def test_fault_at_each_call_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str, mode: str
) -> None:
    # fedmatch.audit.log calls os.write / os.fsync / os.replace through the os module, so
    # patching the module attribute is patching exactly what the log uses.
    real = getattr(os, function)
    # Dry run: how many calls the workload makes, so that each one fails in turn.
    counter = Fault(real, -1, mode)
    dry = open_log(tmp_path / "dry")  # opening (and its empty checkpoint) is not under test
    with monkeypatch.context() as m:
        m.setattr(os, function, counter)
        assert workload(dry, {}) is None
    dry.close()
    assert counter.calls >= 3
    outcomes = set()
    for k in range(counter.calls):
        directory = tmp_path / f"k{k}"
        acked: dict[int, bytes] = {}
        fault = Fault(real, k, mode)
        log = open_log(directory)
        with monkeypatch.context() as m:
            m.setattr(os, function, fault)
            failed = workload(log, acked)
            assert failed is not None, f"call {k} of os.{function} failed unnoticed"
            outcomes.add(failed[0])
            if failed[0] == "append":
                # Fail closed: nothing more is accepted until the log is reopened.
                assert len(acked) == failed[1]
                with pytest.raises(AuditIntegrityError, match="audit log is not writable"):
                    log.append(event(99))
            else:
                # A checkpoint that could not be published leaves the entries intact and
                # the previous checkpoint in place; the log itself stays usable.
                assert len(acked) == APPENDS
                on_disk = (directory / CHECKPOINT_FILE).read_bytes()
                open_checkpoint(on_disk, VERIFIER, ORIGIN)
        log.close()
        assert_sound(directory, acked).close()
    # Every call site was hit: appends (frame write, group fsync) and checkpoints (write,
    # fsync of the file and of the directory, rename).
    assert outcomes == ({"checkpoint"} if function == "replace" else {"append", "checkpoint"})


def test_short_checkpoint_write_never_replaces_the_checkpoint(
    log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(log_dir)
    fill(log, 3)
    good = log.checkpoint()
    fill(log, 2, start=3)
    with monkeypatch.context() as m:
        m.setattr(os, "write", Fault(os.write, 0, "short"))
        with pytest.raises(OSError, match="short write"):
            log.checkpoint()
    assert (log_dir / CHECKPOINT_FILE).read_bytes() == good
    log.close()
    assert_sound(log_dir, {}).close()


# --- group commit ------------------------------------------------------------------------------


def test_group_commit(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threads, per_thread = 8, 200
    real_fsync = os.fsync
    fsyncs = 0

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)
        time.sleep(0.001)  # a disk is never instant; batching is what absorbs its latency

    log = open_log(log_dir)
    results: list[list[SignedEntry]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                results[t].append(log.append(event(t * per_thread + i)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=60)
    monkeypatch.undo()
    try:
        assert errors == []
        total = threads * per_thread
        seqs = sorted(e.seq for r in results for e in r)
        assert seqs == list(range(total))
        for r in results:
            assert [e.seq for e in r] == sorted(e.seq for e in r)  # each thread's order kept
        assert log.size == total
        assert 0 < fsyncs < total, f"{fsyncs} fsyncs for {total} appends"

        first = log.entries(0, total)
        assert len(first) == 1000  # one read is bounded
        raws = first + log.entries(1000, total)
        by_seq = {e.seq: e.raw for r in results for e in r}
        assert raws == [by_seq[i] for i in range(total)]
        decoded = list(log.iter_entries())
        assert [e.seq for e in decoded] == list(range(total))
        assert {e.event.query_id for e in decoded} == {f"q-{i}" for i in range(total)}
        decoded[0].verify(VERIFIER)
        decoded[-1].verify(VERIFIER)
        assert log.root(total) == root_of([leaf_hash(r) for r in raws])
        checkpoint, _ = open_checkpoint(log.checkpoint(), VERIFIER, ORIGIN)
        assert (checkpoint.size, checkpoint.root) == (total, log.root(total))
    finally:
        log.close()
    reopened = open_log(log_dir)
    try:
        assert reopened.size == total
        assert reopened.root(total) == checkpoint.root
    finally:
        reopened.close()


# --- a real crash ------------------------------------------------------------------------------

CHILD = """
import sys
from pathlib import Path

from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.log import AuditLog
from fedmatch.audit.note import NoteSigner

directory, key, origin = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
log = AuditLog(directory, NoteSigner.load(key), origin)
i = 0
while True:
    entry = log.append(AuditEvent(EventKind.SEARCH_REQUESTED, query_id=f"q-{i}"))
    sys.stdout.write(f"{entry.seq}\\n")
    sys.stdout.flush()
    i += 1
    if i % 50 == 0:
        log.checkpoint()
"""


@pytest.mark.parametrize("kill_after", [300, 349, 411])
def test_sigkill_while_appending(tmp_path: Path, kill_after: int) -> None:
    key_file = tmp_path / "party.key"
    SIGNER.save(key_file)
    signer = NoteSigner.load(key_file)
    assert signer.key_id == SIGNER.key_id
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    directory = tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, str(script), str(directory), str(key_file), ORIGIN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    acked: list[int] = []
    deadline = time.monotonic() + 30
    try:
        while len(acked) < kill_after:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"child exited early: {child.stderr.read().decode()[-2000:]}")
            acked.append(int(line))
            assert time.monotonic() < deadline, "child too slow"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    # Lines the child printed before it died are acknowledgements too.
    rest = child.stdout.read().decode()
    acked += [int(line) for line in rest.split("\n")[:-1]]  # the last piece may be partial
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert acked == list(range(len(acked)))

    log = AuditLog(directory, signer, ORIGIN)  # re-verifies against the last checkpoint
    try:
        size = log.size
        assert size >= len(acked)
        assert size <= len(acked) + 1  # at most the entry being acknowledged when killed
        entries = list(log.iter_entries())
        assert [e.seq for e in entries] == list(range(size))
        assert [e.event.query_id for e in entries] == [f"q-{i}" for i in range(size)]
        for e in entries:
            e.verify(VERIFIER)
        published = log.latest_checkpoint()
        assert published is not None
        checkpoint, _ = open_checkpoint(published, VERIFIER, ORIGIN)
        assert checkpoint.size % 50 == 0 and checkpoint.size >= 250
        assert log.append(event(size)).seq == size  # no index reused
        new, _ = open_checkpoint(log.checkpoint(), VERIFIER, ORIGIN)
        verify_consistency(
            checkpoint.size,
            new.size,
            log.consistency_proof(checkpoint.size, new.size),
            checkpoint.root,
            new.root,
        )
    finally:
        log.close()


def test_a_log_whose_checkpoint_was_deleted_is_refused(log_dir: Path) -> None:
    # A new log publishes its empty tree first, so a missing checkpoint means a lost or
    # removed one: re-signing whatever the file now holds would launder a rewrite.
    log = open_log(log_dir)
    fill(log, 3)
    log.close()
    (log_dir / CHECKPOINT_FILE).unlink()
    with pytest.raises(AuditIntegrityError, match="checkpoint is missing"):
        open_log(log_dir)
