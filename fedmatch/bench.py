"""``fedmatch bench search``: encrypted 1:N search against a plain-numpy baseline, same data,
same run. Prints one JSON object (the CLI puts it on the last line)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fedmatch.he.engine import create_engine
from fedmatch.he.keys import RequesterKeys, open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.synthetic import capture, unit_vectors

__all__ = ["bench_search"]


def bench_search(records: int, dimension: int, queries: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    gallery = unit_vectors(rng, records, dimension)
    keys = RequesterKeys.generate()
    evaluation = open_key_bundle(keys.public_bundle())
    engine = create_engine(DEFAULT_PARAM_SET, dimension)
    t0 = time.perf_counter()
    engine.load(gallery)
    encode_s = time.perf_counter() - t0
    he_times, np_times, max_err = [], [], 0.0
    response_bytes = 0
    probe_bytes = 0
    for q in range(queries):
        probe = capture(gallery[(q * 997) % records], rng, 0.8)
        ct = keys.encrypt_probe(probe)
        probe_bytes = len(ct)
        t0 = time.perf_counter()
        blocks = engine.search(evaluation, ct, lambda: False)
        he_times.append(time.perf_counter() - t0)
        response_bytes = sum(len(b.ciphertext) for b in blocks)
        scores = np.concatenate([keys.decrypt_scores(b.ciphertext, b.count) for b in blocks])
        t0 = time.perf_counter()
        plain = gallery.astype(np.float64) @ probe.astype(np.float64)
        np_times.append(time.perf_counter() - t0)
        max_err = max(max_err, float(np.abs(scores - plain).max()))
    he_s, np_s = float(np.median(he_times)), float(np.median(np_times))
    return {
        "bench": "search",
        "engine": type(engine).__name__,
        "param_set": DEFAULT_PARAM_SET.name,
        "records": records,
        "dimension": dimension,
        "queries": queries,
        "encode_s": round(encode_s, 3),
        "he_search_s_p50": round(he_s, 4),
        "he_us_per_record": round(he_s / records * 1e6, 3),
        "numpy_search_s_p50": round(np_s, 6),
        "slowdown_vs_numpy": round(he_s / np_s, 1) if np_s > 0 else None,
        "max_abs_error": max_err,
        "probe_bytes": probe_bytes,
        "key_bundle_bytes": keys.public_bundle().size,
        "response_bytes": response_bytes,
    }
