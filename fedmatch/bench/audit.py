"""``fedmatch bench audit``: the audit log's durable append rate, inclusion proof time and the
auditor's full verification time, each next to a plain baseline measured in the same run.

Three measurements, one JSON object (the CLI prints it on the last line of stdout):

1. Durable appends. ``threads`` threads append realistic ``search_answered`` events (request
   header, probe hash, counts, labels) through :meth:`AuditLog.append`, which returns only
   once the entry is fsynced; concurrent appenders share fsyncs (group commit). ``os.fsync``
   is wrapped during the run to count the fsyncs and note how many bytes each one covered.
   Then one thread appends a tenth as many (one fsync per entry). Baseline: the same entry
   bytes, framed as in ``log.bin`` and written one ``write`` per entry with one ``fsync`` per
   batch of the log's own batching, single-threaded, without signing, JSON or hashing: what
   the disk alone costs, so the rest is the log's own work.
2. A log of ``entries`` signed entries, written directly in the log's file format by a
   process pool (``encode_entry`` + the log's framing + a checkpoint signed with
   ``sign_note``), then opened with :class:`AuditLog`, which rescans it and checks the tree
   against the checkpoint (``open_and_recover_s``). Inclusion proofs are timed on that
   opened log at its full size, at random indices (and index 0, the deepest path),
   generation and client-side verification separately.
3. The auditor's full verification of that log: read and frame-check every entry, recompute
   the Merkle tree and compare its root with the signed checkpoint, then decode every entry,
   verify its Ed25519 signature and check its index and party (the checks of
   :mod:`fedmatch.audit.auditor`), split over ``processes`` worker processes. Baseline, on a
   sample of the same entries in one process: the raw Ed25519 verification alone.

No timing here is asserted anywhere: the machine is shared, so a run reports and compares.
"""

from __future__ import annotations

import base64
import bisect
import os
import resource
import secrets
import statistics
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedmatch.audit.entry import ENTRY_DOMAIN, AuditEvent, EventKind, SignedEntry, encode_entry
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.events import header_event
from fedmatch.audit.log import _FRAME, CHECKPOINT_FILE, LOG_FILE, AuditLog, scan_records
from fedmatch.audit.merkle import HASH_SIZE, MerkleTree, leaf_hash, verify_inclusion
from fedmatch.audit.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint, sign_note
from fedmatch.audit.party import node_origin
from fedmatch.domain import Purpose, QueryHeader
from fedmatch.errors import InvalidInput

__all__ = ["bench_audit"]

TARGET_APPENDS_PER_S = 5000
TARGET_PROOF_MS = 5.0
PROOF_SAMPLES = 1000
# Entries per task of the process pool (generation and verification).
_CHUNK = 5000
# Entries of the single-process verification baseline.
_SAMPLE = 5000
_STATES = ("DE", "FR", "ES", "NL", "PL", "SE", "AT", "BE", "GR", "PT")
_PURPOSES = (Purpose.ASYLUM_DUBLIN, Purpose.BORDER_CONTROL, Purpose.ILLEGAL_STAY_CHECK)
# 2026-01-01T00:00:00Z: entry times of the generated log, one per millisecond.
_BASE_MS = 1_767_225_600_000


def _event(seq: int) -> AuditEvent:
    """A node's ``search_answered`` event as :mod:`node.service` logs it, with fresh ids."""
    state = _STATES[seq % len(_STATES)]
    header = QueryHeader(
        secrets.token_hex(16),
        state,
        _PURPOSES[seq % len(_PURPOSES)],
        "Regulation (EU) 2024/1358 Art. 15(1)",
        f"{state}-2026-{seq:08d}",
        f"unit-{seq % 97:02d}",
        f"op-{seq % 9973:04d}",
    )
    return header_event(
        EventKind.SEARCH_ANSWERED,
        header,
        registers=("IT",),
        probe_hash=secrets.token_hex(32),
        outcome="ok",
        counts={"records_searched": 1_000_000 + seq % 1000},
        labels={"coordinator_index": str(seq), "key_id": secrets.token_hex(8)},
    )


def _frame(raw: bytes) -> bytes:
    return _FRAME.pack(len(raw), zlib.crc32(raw)) + raw


def _quantiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def _fs_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount prefix), or ""."""
    best, kind = "", ""
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1]
                inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        return ""
    return kind


# -- 1. durable appends ----------------------------------------------------------------------


class _Fsyncs:
    """What ``os.fsync`` did while counted: per call, the file position it flushed up to
    (the log writes whole frames under its lock, so that is a frame end) and its seconds."""

    def __init__(self) -> None:
        self.positions: list[int] = []
        self.seconds: list[float] = []

    def p50_ms(self) -> float:
        return round(statistics.median(self.seconds) * 1000, 3) if self.seconds else 0.0


@contextmanager
def _counting_fsync() -> Iterator[_Fsyncs]:
    """Count and time every ``os.fsync`` (of any thread) while active."""
    seen = _Fsyncs()
    real = os.fsync

    def fsync(fd: Any) -> None:
        seen.positions.append(os.lseek(fd, 0, os.SEEK_CUR))
        t0 = time.perf_counter()
        real(fd)
        seen.seconds.append(time.perf_counter() - t0)

    os.fsync = fsync
    try:
        yield seen
    finally:
        os.fsync = real


def _append_run(
    directory: Path, signer: NoteSigner, events: Sequence[AuditEvent], threads: int
) -> tuple[float, _Fsyncs, list[bytes]]:
    """(seconds, the fsyncs, raw entries in log order) of appending ``events``."""
    log = AuditLog(directory, signer, node_origin("IT"))
    shares = [events[i::threads] for i in range(threads)]
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(share: Sequence[AuditEvent]) -> None:
        barrier.wait()
        try:
            for event in share:
                log.append(event)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(s,), daemon=True) for s in shares]
    try:
        for w in workers:
            w.start()
        with _counting_fsync() as fsyncs:
            barrier.wait()
            t0 = time.perf_counter()
            for w in workers:
                w.join()
            elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        if log.size != len(events):
            raise RuntimeError(f"log holds {log.size} entries after {len(events)} appends")
        data = (directory / LOG_FILE).read_bytes()
    finally:
        log.close()
    records, _ = scan_records(data)
    raw = [data[start : start + length] for start, length in records]
    return elapsed, fsyncs, raw


def _raw_fsync_run(
    path: Path, raw: Sequence[bytes], positions: Sequence[int]
) -> tuple[float, _Fsyncs]:
    """Seconds to frame and write ``raw`` one write per entry, fsyncing where the log did."""
    ends: list[int] = []
    end = 0
    for r in raw:
        end += _FRAME.size + len(r)
        ends.append(end)
    # Entries covered by each fsync of the log: every frame that ended by then.
    batches = [bisect.bisect_right(ends, p) for p in positions]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with _counting_fsync() as fsyncs:
            done = 0
            t0 = time.perf_counter()
            for upto in batches:
                for i in range(done, upto):
                    frame = _frame(raw[i])
                    if os.write(fd, frame) != len(frame):
                        raise OSError("short write")
                done = max(done, upto)
                os.fsync(fd)
            if done < len(raw):  # not in practice: the log's last fsync covers every entry
                for i in range(done, len(raw)):
                    os.write(fd, _frame(raw[i]))
                os.fsync(fd)
            elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
    return elapsed, fsyncs


def _bench_appends(root: Path, signer: NoteSigner, appends: int, threads: int) -> dict[str, Any]:
    events = [_event(i) for i in range(appends)]
    elapsed, fsyncs, raw = _append_run(root / "appends", signer, events, threads)
    single = events[: max(1, appends // 10)]
    single_s, single_fsyncs, _ = _append_run(root / "appends-1", signer, single, 1)
    baseline_s, baseline_fsyncs = _raw_fsync_run(root / "raw-fsync.bin", raw, fsyncs.positions)
    rate = appends / elapsed
    return {
        "appends": appends,
        "threads": threads,
        "entry_bytes_mean": round(sum(map(len, raw)) / len(raw), 1),
        "durable_appends_per_s": round(rate, 1),
        "fsyncs": len(fsyncs.seconds),
        "entries_per_fsync": round(appends / max(1, len(fsyncs.seconds)), 2),
        # The disk's state during each run: fsync latency varies a lot on a shared machine.
        "fsync_ms_p50": fsyncs.p50_ms(),
        "single_thread_appends": len(single),
        "single_thread_appends_per_s": round(len(single) / single_s, 1),
        "single_thread_fsyncs": len(single_fsyncs.seconds),
        "single_thread_fsync_ms_p50": single_fsyncs.p50_ms(),
        "baseline_raw_fsync_appends_per_s": round(appends / baseline_s, 1),
        "baseline_fsyncs": len(baseline_fsyncs.seconds),
        "baseline_fsync_ms_p50": baseline_fsyncs.p50_ms(),
        "log_over_raw_fsync": round(elapsed / baseline_s, 2),
        "target_appends_per_s": TARGET_APPENDS_PER_S,
        "meets_append_target": rate >= TARGET_APPENDS_PER_S,
    }


# -- 2. a large signed log, written directly in the log's format -------------------------------


def _generate_chunk(skey: str, origin: str, start: int, stop: int) -> tuple[bytes, bytes]:
    """Entries [start, stop) of a bench log: (their frames, their leaf hashes)."""
    signer = NoteSigner.from_skey(skey)
    frames, leaves = bytearray(), bytearray()
    for seq in range(start, stop):
        raw = encode_entry(signer, origin, seq, _BASE_MS + seq, _event(seq)).raw
        frames += _frame(raw)
        leaves += leaf_hash(raw)
    return bytes(frames), bytes(leaves)


def _chunks(n: int, size: int = _CHUNK) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


def _write_log(
    directory: Path, signer: NoteSigner, origin: str, entries: int, pool: ProcessPoolExecutor
) -> tuple[Checkpoint, float]:
    """Write an ``entries``-entry log and its signed checkpoint; (checkpoint, seconds)."""
    directory.mkdir(parents=True)
    t0 = time.perf_counter()
    spans = _chunks(entries)
    skey = signer.skey()
    tree = MerkleTree()
    with open(directory / LOG_FILE, "wb") as fh:
        results = pool.map(
            _generate_chunk,
            [skey] * len(spans),
            [origin] * len(spans),
            [lo for lo, _ in spans],
            [hi for _, hi in spans],
        )
        for frames, leaves in results:
            fh.write(frames)
            tree.extend(leaves[i : i + HASH_SIZE] for i in range(0, len(leaves), HASH_SIZE))
        fh.flush()
        os.fsync(fh.fileno())
    checkpoint = Checkpoint(origin, entries, tree.root())
    (directory / CHECKPOINT_FILE).write_bytes(sign_note(checkpoint.body(), signer))
    return checkpoint, time.perf_counter() - t0


def _bench_proofs(log: AuditLog, size: int) -> dict[str, Any]:
    root = log.root(size)
    # Index 0 has the longest path (ceil(log2(size)) hashes); the rest are uniform.
    indices = [0] + [secrets.randbelow(size) for _ in range(PROOF_SAMPLES - 1)]
    prove_s, verify_s, both_s, lengths = [], [], [], []
    for index in indices:
        leaf = leaf_hash(log.entries(index, index + 1)[0])
        t0 = time.perf_counter()
        proof = log.inclusion_proof(index, size)
        t1 = time.perf_counter()
        verify_inclusion(leaf, index, size, proof, root)
        t2 = time.perf_counter()
        prove_s.append(t1 - t0)
        verify_s.append(t2 - t1)
        both_s.append(t2 - t0)
        lengths.append(len(proof))
    prove50, prove99 = _quantiles_ms(prove_s)
    verify50, verify99 = _quantiles_ms(verify_s)
    both50, both99 = _quantiles_ms(both_s)
    return {
        "proof_samples": len(indices),
        "inclusion_proof_ms_p50": round(prove50, 4),
        "inclusion_proof_ms_p99": round(prove99, 4),
        "verify_ms_p50": round(verify50, 4),
        "verify_ms_p99": round(verify99, 4),
        "proof_and_verify_ms_p50": round(both50, 4),
        "proof_and_verify_ms_p99": round(both99, 4),
        "proof_hashes": max(lengths),
        "proof_hashes_mean": round(sum(lengths) / len(lengths), 2),
        "target_proof_ms": TARGET_PROOF_MS,
        # The strictest reading: the 99th percentile of serving and checking a proof.
        "meets_proof_target": both99 <= TARGET_PROOF_MS,
    }


# -- 3. the auditor's full verification --------------------------------------------------------


def _verify_chunk(vkey: str, origin: str, path: str, offset: int, end: int, first: int) -> int:
    """Decode and verify the entries in bytes [offset, end) of a log file, which must be
    entries ``first, first + 1, ...`` of ``origin``; returns how many were verified."""
    verifier = NoteVerifier.from_vkey(vkey)
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read(end - offset)
    records, stop = scan_records(data)
    if stop != len(data):
        raise AuditVerificationError(f"entry {first + len(records)} is not a valid record")
    for k, (start, length) in enumerate(records):
        entry = SignedEntry.decode(data[start : start + length])
        entry.verify(verifier)
        if entry.seq != first + k or entry.party != origin:
            raise AuditVerificationError(f"entry at {first + k} says index {entry.seq}")
    return len(records)


def _full_verification(
    directory: Path, verifier: NoteVerifier, origin: str, pool: ProcessPoolExecutor
) -> dict[str, Any]:
    path = directory / LOG_FILE
    t0 = time.perf_counter()
    checkpoint, _ = open_checkpoint((directory / CHECKPOINT_FILE).read_bytes(), verifier, origin)
    data = path.read_bytes()
    records, end = scan_records(data)
    if end != len(data) or len(records) != checkpoint.size:
        raise AuditVerificationError("log does not hold exactly the checkpoint's entries")
    tree = MerkleTree()
    tree.extend(leaf_hash(data[start : start + length]) for start, length in records)
    if tree.root() != checkpoint.root:
        raise AuditVerificationError("recomputed root differs from the checkpoint's")
    t1 = time.perf_counter()
    del data
    spans = _chunks(len(records))
    # Byte ranges of whole frames: a frame starts _FRAME.size before its entry.
    ranges = [
        (
            records[lo][0] - _FRAME.size,
            records[hi - 1][0] + records[hi - 1][1],
            lo,
        )
        for lo, hi in spans
    ]
    vkey = verifier.vkey()
    counts = pool.map(
        _verify_chunk,
        [vkey] * len(ranges),
        [origin] * len(ranges),
        [str(path)] * len(ranges),
        [r[0] for r in ranges],
        [r[1] for r in ranges],
        [r[2] for r in ranges],
    )
    verified = sum(counts)
    t2 = time.perf_counter()
    if verified != checkpoint.size:
        raise AuditVerificationError(f"verified {verified} of {checkpoint.size} entries")
    total = t2 - t0
    return {
        "verified_entries": verified,
        "full_verification_s": round(total, 3),
        "recompute_tree_s": round(t1 - t0, 3),
        "verify_signatures_s": round(t2 - t1, 3),
        "entries_per_s": round(verified / total, 1),
    }


def _verification_baseline(path: Path, verifier: NoteVerifier, sample: int) -> dict[str, Any]:
    """Per-entry costs in one process on the first ``sample`` entries: decoding, the entry
    check (decode + signature), and the raw Ed25519 verification of the same signatures."""
    with open(path, "rb") as fh:
        data = fh.read(2048 * sample)  # entries are ~650 bytes
    records, _ = scan_records(data)
    raws = [data[s : s + n] for s, n in records[:sample]]
    t0 = time.perf_counter()
    entries = [SignedEntry.decode(r) for r in raws]
    t1 = time.perf_counter()
    for e in entries:
        e.verify(verifier)
    t2 = time.perf_counter()
    key = Ed25519PublicKey.from_public_bytes(verifier.public_key_bytes())
    signed = []
    for r in raws:
        payload, _, trailer = r.rpartition(b"\n")
        signed.append((ENTRY_DOMAIN + payload, base64.b64decode(trailer.split(b" ")[1])))
    t3 = time.perf_counter()
    for message, signature in signed:
        key.verify(signature, message)
    t4 = time.perf_counter()
    n = len(raws)
    return {
        "baseline_sample_entries": n,
        "decode_us": round((t1 - t0) / n * 1e6, 1),
        "entry_signature_check_us": round((t2 - t1) / n * 1e6, 1),
        "baseline_raw_ed25519_verify_us": round((t4 - t3) / n * 1e6, 1),
    }


# -- the whole bench ---------------------------------------------------------------------------


def bench_audit(
    appends: int = 20_000,
    threads: int = 16,
    entries: int = 1_000_000,
    workdir: Path | None = None,
    processes: int = 0,
) -> dict[str, Any]:
    """Run the three measurements; ``processes`` 0 means one per core."""
    if appends < 1 or threads < 1 or entries < 2:
        raise InvalidInput("bench audit needs appends >= 1, threads >= 1, entries >= 2")
    processes = processes or os.cpu_count() or 1
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    origin = node_origin("IT")
    signer = NoteSigner.generate(origin)
    verifier = signer.verifier()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedmatch-bench-audit-", dir=workdir) as tmp:
        root = Path(tmp)
        out: dict[str, Any] = {
            "bench": "audit",
            "cpu_count": os.cpu_count(),
            "workdir": str(root),
            "filesystem": _fs_type(root),
        }
        out.update(_bench_appends(root, signer, appends, threads))
        big = root / "log-large"
        # spawn, as the search workers: no fork of a process that has threads.
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
            checkpoint, generate_s = _write_log(big, signer, origin, entries, pool)
            out["entries"] = entries
            out["processes"] = processes
            out["generate_log_s"] = round(generate_s, 3)
            out["log_bytes"] = (big / LOG_FILE).stat().st_size
            t0 = time.perf_counter()
            log = AuditLog(big, signer, origin)
            out["open_and_recover_s"] = round(time.perf_counter() - t0, 3)
            try:
                out["opened_log_verifies"] = (
                    log.size == entries and log.root(entries) == checkpoint.root
                )
                out["tree_leaves"] = (
                    "leaf hashes of the signed entries of the generated log (the log that "
                    "full verification reads), in a tree rebuilt by AuditLog on open"
                )
                out.update(_bench_proofs(log, entries))
            finally:
                log.close()
                del log
            out.update(_full_verification(big, verifier, origin, pool))
        out.update(_verification_baseline(big / LOG_FILE, verifier, min(entries, _SAMPLE)))
    out["total_s"] = round(time.perf_counter() - t_start, 1)
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out
