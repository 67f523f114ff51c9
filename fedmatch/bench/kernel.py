"""``fedmatch bench kernel``: the native product kernel against SEAL's products, and the
engines built on each, in one process (no node, no gRPC: :mod:`fedmatch.bench.search` is
the end-to-end benchmark).

Reports, as one JSON object:

- ``compile_s``: the kernel's JIT compilation (paid when an engine starts);
- ``transfer``: copying one rotation out of SEAL and one block's sum back in, in place
  (:mod:`fedmatch.he.sealmem`) and through serialization (the fallback);
- ``products``: per 8,192-record block at d = 128 and 512, SEAL's ``multiply_plain`` +
  ``add_inplace`` over the block's diagonals (the default set and the kernel set) against
  the kernel on 1 and 2 threads (a group of blocks per call, as the engine runs it);
- ``search``: ``engine.search`` over a synthetic register with every protection, median
  over queries, per engine (default set with SEAL, kernel set with the kernel; one process
  and the sharded engine), with agreement against numpy's decisions.

Times are medians of repeats; the machine may be shared (``load_average`` says how much).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.he import kernel, sealfmt, sealio, sealmem
from fedmatch.he.engine import PackedEngine
from fedmatch.he.engines import create_engine
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.keys import open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET, ParamSet

__all__ = ["bench_kernel"]

THRESHOLD = 0.45


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1e3, 3)


def _transfer(keys: RequesterKeys) -> dict[str, Any]:
    params = keys.params
    ctx = params.context()
    engine = PackedEngine(params, 128)
    probe = keys.encrypt_probe(unit_vectors(np.random.default_rng(3), 1, 128)[0])
    ct = engine.open_probe(probe).query  # a ciphertext of the top level, as a rotation is
    shape = (2, ct.coeff_modulus_size(), params.poly_modulus_degree)
    words, small = np.empty(shape, dtype=np.uint64), np.empty(shape, dtype=np.uint32)
    sealmem.read_ciphertext(ct, words)

    def serialized_read() -> None:
        body, _ = sealfmt.unpack(sealio.to_bytes(ct), "ciphertext", 1 << 26)
        np.copyto(small, sealfmt.ciphertext_at(body, 0, "ciphertext").data, casting="unsafe")

    def serialized_write() -> None:
        body, version = sealfmt.unpack(sealio.to_bytes(ct), "ciphertext", 1 << 26)
        sealfmt.ciphertext_at(body, 0, "ciphertext").data[...] = words
        data = sealfmt.pack(body, version, compress=False)
        sealio.load_bytes(lambda path: ct.load(ctx, path), data, "ciphertext")

    return {
        "in_place": sealmem.in_place(ct),
        "read_rotation_ms": _median_ms(lambda: sealmem.read_ciphertext(ct, small), 50),
        "write_sum_ms": _median_ms(lambda: sealmem.write_ciphertext(ct, ctx, words), 50),
        "read_rotation_serialized_ms": _median_ms(serialized_read, 10),
        "write_sum_serialized_ms": _median_ms(serialized_write, 10),
    }


def _seal_products_ms(params: ParamSet, dimension: int, keys: RequesterKeys) -> float:
    """SEAL's products for one block (its diagonals times the baby steps, summed)."""
    engine = PackedEngine(params, dimension)
    rng = np.random.default_rng(1)
    block = engine.encode_block_rows(unit_vectors(rng, params.block_records, dimension))
    query = engine.open_probe(keys.encrypt_probe(unit_vectors(rng, 1, dimension)[0])).query
    evaluation = open_key_bundle(keys.public_bundle())
    rotations = engine._rotations(query, evaluation, lambda: False)
    return _median_ms(lambda: engine._products(rotations, [block], evaluation), 3)


def _kernel_ms(params: ParamSet, dimension: int, threads: int) -> float:
    """The kernel's products per block, a group of blocks per call (random residues: its
    time does not depend on them)."""
    moduli = kernel.KernelModuli.top_level(params)
    dp = 1 << (dimension - 1).bit_length()
    rng = np.random.default_rng(2)
    degree = params.poly_modulus_degree

    def residues(count: int) -> np.ndarray:
        rows = [rng.integers(0, q, (count, degree), dtype=np.uint64) for q in moduli.moduli]
        return np.stack(rows, axis=-2).astype(np.uint32)

    tile = kernel.tile_for(degree, threads)
    rotations = kernel.tiled(residues(2 * dp).reshape(dp, 2, -1, degree), tile)
    # Stored as the engine stores them (packed once, not in the timed call).
    blocks = [kernel.pack(kernel.tiled(residues(dp), tile), moduli) for _ in range(kernel.GROUP)]
    per_call = _median_ms(lambda: kernel.products(rotations, dp, blocks, moduli, threads), 5)
    return round(per_call / len(blocks), 3)


def _search(
    params: ParamSet, keys: RequesterKeys, records: int, workers: int, queries: int
) -> dict[str, Any]:
    rng = np.random.default_rng(records)
    rows = unit_vectors(rng, records, 128)
    started = time.perf_counter()
    engine = create_engine(params, 128, workers=workers)
    try:
        start_s = time.perf_counter() - started
        started = time.perf_counter()
        engine.load(rows)
        load_s = time.perf_counter() - started
        evaluation = open_key_bundle(keys.public_bundle())
        times, agree = [], 0
        for q in range(queries + 1):  # the first is a warm-up
            if q % 2:
                probe = capture(rows[int(rng.integers(records))], rng, 0.8)
            else:
                probe = unit_vectors(rng, 1, 128)[0]
            sent = keys.encrypt_probe(probe)
            started = time.perf_counter()
            out = engine.search(evaluation, sent, THRESHOLD, lambda: False)
            elapsed = time.perf_counter() - started
            found = {
                out.layout.row(b, int(p))
                for b, ct in enumerate(out.blocks)
                for p in np.flatnonzero(keys.decrypt_matches(ct))
            }
            plain = set(np.flatnonzero(rows.astype(np.float64) @ probe >= THRESHOLD).tolist())
            if q:
                times.append(elapsed)
                agree += found == plain
    finally:
        engine.close()
    kind = "kernel" if params.kernel else "seal"
    return {
        "params": params.name,
        "products": kind,
        "engine": "local" if workers == 1 else f"sharded-{workers}",
        "records": records,
        "engine_start_s": round(start_s, 3),
        "load_s": round(load_s, 2),
        "p50_s": round(statistics.median(times), 4),
        "agreement": agree / queries,
    }


def bench_kernel(records: int = 100_000, queries: int = 5, workers: int = 0) -> dict[str, Any]:
    """The benchmark; ``records`` for the engine searches (0: skip them), ``workers`` for
    the sharded ones (0: one per core)."""
    workers = workers or max(1, len(os.sched_getaffinity(0)))
    load_before = os.getloadavg()
    compile_s = kernel.warm_up()
    keys = {ps.name: RequesterKeys.generate(ps) for ps in (DEFAULT_PARAM_SET, KERNEL_PARAM_SET)}
    kernel_keys = keys[KERNEL_PARAM_SET.name]
    products = []
    for dimension in (128, 512):
        row: dict[str, Any] = {"dim": dimension}
        for ps in (DEFAULT_PARAM_SET, KERNEL_PARAM_SET):
            row[f"seal_ms_per_block[{ps.name}]"] = _seal_products_ms(ps, dimension, keys[ps.name])
        for threads in (1, 2):
            ms = _kernel_ms(KERNEL_PARAM_SET, dimension, threads)
            row[f"kernel_ms_per_block_{threads}t"] = ms
        products.append(row)
    searches = []
    if records:
        for ps in (DEFAULT_PARAM_SET, KERNEL_PARAM_SET):
            for count in sorted({1, workers}):
                searches.append(_search(ps, keys[ps.name], records, count, queries))
    return {
        "bench": "kernel",
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "compile_s": round(compile_s, 3),
        "transfer": _transfer(kernel_keys),
        "products": products,
        "search": searches,
    }
