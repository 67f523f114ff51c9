"""``fedmatch bench search``: the node's encrypted search end to end over gRPC on loopback,
against a plain-numpy search of the same data in the same run.

A synthetic register of unit vectors is enrolled into a real node (SQLite file, engine,
audit log, gRPC server on port 0, mutual TLS with certificates of a PKI made for the run);
a requester registers its keys once, then runs warm queries through the node's Search RPC,
decrypts the match bits and maps them back to rows through the node's own hit-detail path.
The node is built from ``NodeConfig(he_param_set=...)`` as a deployed node is, and the
requester's keys are made for that set.
Every query is signed by an officer of the requesting state and first goes on the record
as a real one does: the coordinator's ``search_authorized`` entry (naming the signed
request) is appended to a coordinator log and the node witnesses a checkpoint containing
it (over its WitnessService, called with the coordinator's certificate); that time is part
of the measured latency and also reported alone. The plain baselines
(:mod:`fedmatch.bench.plain`) search the same rows with the same probes; agreement compares
the encrypted answers with their exact (float64) decisions. The node runs all its checks: the
coordinator's certificate, the witnessed entry, the signature and certificate chain of the
request, replay, policy and quota. Probes alternate genuine (a capture of a register row at
a cosine drawn around the threshold) and impostor (a fresh random vector). Prints one JSON
object; the CLI puts it on the last line of stdout.
"""

from __future__ import annotations

import datetime as dt
import resource
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedmatch.audit.entry import EventKind, digest_hex
from fedmatch.audit.events import header_event
from fedmatch.audit.note import CosignatureVerifier
from fedmatch.audit.party import COORDINATOR_ORIGIN, AuditConfig, PartyAudit, node_origin
from fedmatch.bench.memory import node_memory, pss_bytes, rss_bytes, sample
from fedmatch.bench.plain import PlainBaselines
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category, EncryptedProbe, Purpose, QueryHeader, Sex
from fedmatch.errors import PreconditionFailed
from fedmatch.grpcutil.server import make_channel
from fedmatch.he.engine import warm_natives
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.params import DEFAULT_PARAM_SET, get_param_set
from fedmatch.heap import release_free_heap
from fedmatch.pki.names import dns_name
from fedmatch.pki.provision import PartyFiles, provision
from fedmatch.protocol.gate import Gate
from fedmatch.protocol.limits import MAX_NODE_RESPONSE_BYTES, MAX_RECEIVE_BYTES
from fedmatch.protocol.replay import ReplayGuard
from fedmatch.protocol.statement import RequestSigner
from fedmatch.protocol.transport import Security
from fedmatch.protocol.wire import (
    authorization_to_pb,
    encode_handle,
    header_to_pb,
    key_bundle_to_pb,
    probe_to_pb,
)
from fedmatch.rpc.v1 import audit_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc

__all__ = ["DEFAULT_BENCH_PARAM_SET", "bench_search"]

# The set the benchmarks' nodes run unless told otherwise: the default set. The kernel set
# (--param-set ckks-n8192-q29.29.29.25.60-k) was slower end to end at 100K x 128 on this
# 2-core machine (p50 2.17 s against 0.74 s, one after the other, load 1-4): its products are
# faster, but its rotations (4 data primes, rotation base 8) cost more than they save.
DEFAULT_BENCH_PARAM_SET = DEFAULT_PARAM_SET.name

MODEL = "bench-synthetic"
STATE = "IT"  # the searched node
REQUESTER = "DE"


# The officer whose key signs the bench's requests (bench-officer.officer.xx.fedmatch.eu).
BENCH_OFFICER = "bench-officer"


def _header() -> QueryHeader:
    return QueryHeader(
        secrets.token_hex(16), REQUESTER, Purpose.ASYLUM_DUBLIN, "bench", "BENCH-1",
        unit="bench-unit", operator=BENCH_OFFICER,
    )  # fmt: skip


def _audits(directory: Path, parties: dict[str, PartyFiles]) -> tuple[PartyAudit, PartyAudit]:
    """The node's audit kit and the coordinator's (whose log authorizes each search); their
    log keys are the signing keys their certificates bind."""
    coordinator = parties["coordinator"]
    node = PartyAudit(
        AuditConfig(
            directory / "audit-node",
            parties[f"node-{STATE}"].signing_key,
            coordinator_key=coordinator.vkey,
        ),
        node_origin(STATE),
    )
    try:
        coordinator_audit = PartyAudit(
            AuditConfig(directory / "audit-coordinator", coordinator.signing_key),
            COORDINATOR_ORIGIN,
        )
    except BaseException:
        node.close()
        raise
    return node, coordinator_audit


def _growth(rss0: int, pss0: int | None) -> tuple[int, int | None]:
    """This process's RSS and PSS growth since ``rss0`` and ``pss0``."""
    pss = pss_bytes()
    return rss_bytes() - rss0, None if pss is None or pss0 is None else pss - pss0


def bench_search(
    records: int,
    dimension: int,
    queries: int,
    threads: int = 0,
    threshold: float = 0.45,
    engine: str = "local",
    ray_address: str = "",
    param_set: str = DEFAULT_BENCH_PARAM_SET,
) -> dict[str, Any]:
    """``engine`` "local" runs ``threads`` worker processes (0: one per core); "ray" runs
    ``threads`` Ray actors (0: one per Ray CPU) on a private local runtime, or on the
    cluster at ``ray_address``. ``param_set`` names the node's HE parameter set."""
    # Imported here: fedmatch is the shared library; the bench drives a real node, and
    # authorizes each search as the coordinator does.
    from coordinator.witnessing import Witnesses
    from fedmatch.audit.register import SEED_OPERATOR, synthetic_prefix
    from fedmatch.demo.seed import Seeded, seeded_event
    from node.config import NodeConfig
    from node.policy import SearchPolicy
    from node.records import NewRecord, RecordMeta
    from node.service import NodeService, build_engine
    from node.servicer import serve_node
    from node.store import RecordStore

    ps = get_param_set(param_set)
    rng = np.random.default_rng(7)
    gallery = unit_vectors(rng, records, dimension)
    with tempfile.TemporaryDirectory(prefix="fedmatch-bench-") as tmp:
        db = Path(tmp) / f"{STATE}.sqlite"
        store = RecordStore(db, STATE, dimension, MODEL)
        day = dt.date(2026, 1, 1)
        born = dt.date(1990, 1, 1)  # enrolment needs a birth date (minimum age 6)
        # Synthetic records as `node seed` makes them, logged below as it logs them: the
        # register reconciles with the node's log (fedmatch/audit/register.py).
        prefix = synthetic_prefix(STATE)
        batch = [
            NewRecord(
                RecordMeta(f"{prefix}{i:08d}", Category.APPLICANT, day, "X", day, Sex.MALE,
                           SEED_OPERATOR, born),
                t,
                MODEL,
            )
            for i, t in enumerate(gallery)
        ]  # fmt: skip
        seeded = Seeded(tuple(store.add_many(batch)), len(batch))
        del batch
        cfg = NodeConfig(
            member_state=STATE, database=db, dimension=dimension, model_id=MODEL,
            threshold=threshold, engine=engine, he_param_set=ps.name,
            search_workers=threads if engine == "local" else 0,
            ray_workers=threads if engine == "ray" else 0, ray_address=ray_address,
        )  # fmt: skip
        parties = provision(
            Path(tmp) / "pki", [STATE, REQUESTER], operators=[REQUESTER],
            officers={REQUESTER: [BENCH_OFFICER]},
        )  # fmt: skip
        node_security = Security(parties[f"node-{STATE}"].tls)
        node_audit, coordinator_audit = _audits(Path(tmp), parties)
        node_audit.record(seeded_event(STATE, seeded))
        gate = Gate(node_security.verify_chain, ReplayGuard(Path(tmp) / "replay.sqlite"))
        # Signed by an officer of the requesting state with their own key, as every party
        # requires (their personal `officer` certificate names the header's operator).
        officer = parties[f"officer-{BENCH_OFFICER}-{REQUESTER}"]
        signer = RequestSigner(officer.signer(), officer.tls.chain.read_bytes())
        # Limits high enough for any run of the bench (the node still charges every search).
        policy = SearchPolicy(requests_per_minute=1_000_000, daily_quota=1_000_000)
        # The baseline after the bench's own enrolment temporaries are given back: else the
        # node's trim after its load returns them too, and its growth reads as negative.
        release_free_heap()
        rss0, pss0 = rss_bytes(), pss_bytes()
        t0 = time.perf_counter()
        # Started apart from the register's load, to report the engine's own start-up (for
        # Ray: the runtime and its actors).
        search_engine = build_engine(cfg)
        try:
            # Ready: a reply from every search worker, which answers once it has compiled.
            held_bytes = getattr(search_engine, "held_bytes", None)
            if held_bytes is not None:
                held_bytes()
            # And the node process's own native steps (its decoy blocks), which the node
            # compiles at start: fixed, not the register's.
            warm_natives(ps)
            engine_start_s = time.perf_counter() - t0
            # The node's memory, sampled ready, loaded and serving (fedmatch.bench.memory).
            ready = sample(search_engine, *_growth(rss0, pss0))
            service = NodeService(cfg, store, node_audit, gate, policy, engine=search_engine)
        except BaseException:
            search_engine.close()  # the service would have closed it
            raise
        build_s = time.perf_counter() - t0
        loaded = sample(service.engine, *_growth(rss0, pss0))
        workers = int(getattr(service.engine, "workers", 1))
        server = serve_node(service, node_security, "127.0.0.1:0")
        # The coordinator's side of the node: its certificate, the node's name.
        channel = make_channel(
            server.address,
            MAX_NODE_RESPONSE_BYTES,
            MAX_RECEIVE_BYTES,
            Security(parties["coordinator"].tls).channel_credentials(),
            dns_name("node", STATE),
        )
        stub = node_pb2_grpc.NodeServiceStub(channel)
        node_key = node_audit.signer
        witnesses = Witnesses(
            coordinator_audit.log,
            {STATE: audit_pb2_grpc.WitnessServiceStub(channel)},
            {
                STATE: CosignatureVerifier.from_public_key(
                    node_key.name, node_key.public_key_bytes()
                )
            },
        )
        try:
            keys = RequesterKeys.generate(ps)
            # Made after the node's memory was measured: the baselines' copies are not its.
            plain = PlainBaselines(gallery, threshold)
            registration = common_pb2.RegisterKeysRequest(
                header=header_to_pb(_header()), key_bundle=key_bundle_to_pb(keys.public_bundle())
            )
            # What the node process keeps of the keys: its growth across the registration
            # (this process is the client too: its own copies exist before and after).
            release_free_heap()
            keys0 = rss_bytes(), pss_bytes()
            stub.RegisterKeys(registration, timeout=120)
            release_free_heap()
            keys_rss, keys_pss = _growth(*keys0)
            times, up, down, agree = [], 0, 0, 0
            block_bytes = 0
            auth_times: list[float] = []
            part_times: dict[str, list[float]] = {}
            # The first query warms caches and is not timed.
            probes = [
                capture(gallery[rng.integers(records)], rng, float(rng.uniform(0.35, 0.9)))
                if q % 2 == 0
                else unit_vectors(rng, 1, dimension)[0]
                for q in range(queries + 1)
            ]
            answers: list[set[int]] = []
            for q, probe in enumerate(probes):
                header = _header()
                t0 = time.perf_counter()
                ciphertext = keys.encrypt_probe(probe)
                t_encrypted = time.perf_counter()
                probe_hash = digest_hex(ciphertext)
                # Signed by the requesting officer, then on the coordinator's record before
                # the search, witnessed by the node (as coordinator/service.py lookup does).
                signed = signer.sign(header, "lookup", probe_hash)
                ta = time.perf_counter()
                entry = coordinator_audit.log.append(
                    header_event(
                        EventKind.SEARCH_AUTHORIZED,
                        header,
                        probe_hash=probe_hash,
                        registers=[STATE],
                        labels={"key_id": keys.key_id, "request": signed.digest()},
                    )
                )
                authorization, failures = witnesses.authorize(entry, [STATE], 60.0)
                if failures:
                    raise PreconditionFailed(f"the node did not witness the search: {failures}")
                auth_elapsed = time.perf_counter() - ta
                request = node_pb2.SearchRequest(
                    header=header_to_pb(header, signed),
                    probe=probe_to_pb(EncryptedProbe(
                        keys.params.name, ciphertext, MODEL, dimension, keys.key_id
                    )),
                    threshold_version=cfg.threshold_version,
                    authorization=authorization_to_pb(authorization),
                )  # fmt: skip
                t_sent = time.perf_counter()
                response = stub.Search(request, timeout=600)
                t_answered = time.perf_counter()
                flags = keys.decrypt_matches_many([block.ciphertext for block in response.blocks])
                positions = [
                    (b, int(p)) for b, found in enumerate(flags) for p in np.flatnonzero(found)
                ]
                elapsed = time.perf_counter() - t0
                parts = {
                    "encrypt": t_encrypted - t0,
                    "sign_and_authorize": t_sent - t_encrypted,
                    "node_search": t_answered - t_sent,
                    "decrypt": t0 + elapsed - t_answered,
                }
                # Row ids of a fresh register are 1..n in enrolment order.
                answers.append({
                    service.handles.resolve(header.query_id, REQUESTER, encode_handle(b, p)) - 1
                    for b, p in positions
                })  # fmt: skip
                if q == 0:
                    continue
                times.append(elapsed)
                auth_times.append(auth_elapsed)
                for name, seconds in parts.items():
                    part_times.setdefault(name, []).append(seconds)
                up, down = request.ByteSize(), response.ByteSize()
                block_bytes = max(len(block.ciphertext) for block in response.blocks)
            # Exact decisions (float64) and every plain baseline timed (not the warm-up), on
            # the same probes, after the encrypted queries: BLAS's threads spin after each
            # call (OpenBLAS ~0.1 s), and a baseline timed between the queries took ~50-60
            # ms of CPU from the node's workers in the next search (100k: p50 0.23-0.245 s
            # against 0.21 s with the baselines apart, measured).
            for q, (probe, found) in enumerate(zip(probes, answers, strict=True)):
                expected = plain.search(probe, timed=q > 0)
                agree += q > 0 and found == expected
            # Serving: the node process as loaded plus the keys it kept (its share of the
            # queries' working memory is not told apart from the client's in this process),
            # the workers as they are after the queries.
            main_pss = (
                None
                if loaded.main_pss is None or keys_pss is None
                else (loaded.main_pss + keys_pss)
            )
            serving = sample(service.engine, loaded.main_rss + keys_rss, main_pss)
            memory = node_memory(service.engine, records, ready, loaded, serving)
        finally:
            channel.close()
            server.stop(0.5)
            service.close()
            gate.close()
            store.close()
            node_audit.close()
            coordinator_audit.close()
    p50 = statistics.median(times)
    return {
        "bench": "search",
        "records": records,
        "dim": dimension,
        "scheme": "CKKS",
        "param_set": ps.name,
        "params": {
            "name": ps.name,
            "poly_modulus_degree": ps.poly_modulus_degree,
            "coeff_bits": list(ps.coeff_bits),
            "records_per_ciphertext": ps.block_records,
        },
        "queries": queries,
        "threads": workers,
        "engine": engine,
        "engine_start_s": round(engine_start_s, 3),
        # Every query: mutual TLS to the node and a request signed by an officer.
        "transport": "mtls",
        "signed_requests": True,
        "build_s": round(build_s, 3),
        "p50_s": round(p50, 4),
        "p95_s": round(float(np.percentile(times, 95)), 4),
        # Appending the coordinator's entry and the node's witnessing of it (in p50_s too).
        "authorization_ms_p50": round(statistics.median(auth_times) * 1e3, 2),
        # Where a query's time goes (medians of each part, so they need not add up to p50_s):
        # the requester's encryption, the officer's signature and the authorization, the
        # node's Search call (TLS, checks, audit, engine, the response's transfer) and the
        # requester's decryption of every block.
        "query_parts_ms_p50": {
            name: round(statistics.median(values) * 1e3, 1) for name, values in part_times.items()
        },
        "query_bytes_up": up,
        "key_bytes_once": registration.ByteSize(),
        "response_bytes_down": down,
        "bytes_per_record_down": round(down / records, 2),
        # One result block as sent (fedmatch.he.resultfmt), per record it holds: the format's
        # own cost, without the padding blocks and message framing counted above.
        "result_block_bytes": block_bytes,
        "result_bytes_per_record": round(block_bytes / ps.block_records, 3),
        **memory,
        **plain.report(p50),
        # Register rows scored per second at the median, in all and per worker: runs with
        # 1 and W workers give the scaling (per worker constant: linear).
        "records_per_s_p50": round(records / p50),
        "records_per_s_per_worker": round(records / p50 / max(workers, 1)),
        "agreement": agree / queries,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
