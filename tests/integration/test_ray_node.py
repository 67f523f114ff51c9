"""A node whose search runs on Ray actors answers lookups exactly as a local node does.

A federation of DE and IT (local engines) plus an FR node configured with engine = "ray" and
two actors, on a private local Ray runtime that its engine starts and stops itself. IT's and
FR's registers hold the same templates (seeded alike here, and checked), so every lookup
from DE must find the same register rows at IT and at FR, over real gRPC and mutual TLS.
Also: the search bench on the Ray engine, a killed actor, and the engine settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import ray

from fedmatch.demo.seed import seed_register
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.errors import ConfigError, Unavailable
from fedmatch.he.engines import create_engine
from fedmatch.he.keys import open_key_bundle
from fedmatch.he.params import DEFAULT_PARAM_SET
from fedmatch.requester.client import LookupReport
from node.config import NodeConfig, load_node_config
from node.service import NodeService
from node.servicer import serve_node
from node.store import RecordStore
from tests.federation import (
    DIM,
    MODEL,
    TODAY,
    Federation,
    federation,
    gate,
    header,
    node_audit,
    node_entry,
    security,
    shared_keys,
)

RECORDS = 9000  # two blocks of 8,192 records: each of FR's two actors holds one
SEED = 7


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, NodeService]]:
    tmp = tmp_path_factory.mktemp("ray-node")
    for state in ("IT", "FR"):
        seed_register(tmp / f"{state}.sqlite", state, RECORDS, SEED, DIM, MODEL, TODAY)
    with ExitStack() as stack:
        db = tmp / "FR.sqlite"
        cfg = NodeConfig(
            member_state="FR", database=db, dimension=DIM, model_id=MODEL,
            engine="ray", ray_workers=2,
        )  # fmt: skip
        store = RecordStore(db, "FR", DIM, MODEL)
        stack.callback(store.close)
        audit = node_audit(tmp, "FR")
        stack.callback(audit.close)
        node_gate = gate(tmp, "node-FR")
        stack.callback(node_gate.close)
        node = NodeService(cfg, store, audit, node_gate)
        stack.callback(node.close)
        server = serve_node(node, security(tmp, "node-FR"), "127.0.0.1:0")
        stack.callback(server.stop, 0.2)
        # records=0: the federation opens the registers seeded above (DE's stays empty).
        with federation(
            tmp, ("DE", "IT"), records=0, extra_nodes=(node_entry(tmp, "FR", server.address),)
        ) as f:
            yield f, node


def _record_ids(node: NodeService, report: LookupReport) -> set[int]:
    """The register records behind the requester's matches at ``node``, through the node's
    own per-query handle map."""
    state = node.config.member_state
    query = report.header.query_id
    return {
        node.handles.resolve(query, report.header.requesting_state, handle)
        for s, handle in report.matches
        if s == state
    }


def test_bench_search_runs_on_the_ray_engine() -> None:
    """``fedmatch bench search --engine ray`` at a tiny size: a node over mTLS whose engine
    (built from its config, engine = "ray") is two Ray actors on a private runtime that the
    engine starts, and stops when the node closes."""
    from fedmatch.bench.search import bench_search

    assert not ray.is_initialized()

    result = bench_search(records=300, dimension=32, queries=2, threads=2, engine="ray")
    assert (result["engine"], result["threads"], result["agreement"]) == ("ray", 2, 1.0)
    assert result["engine_start_s"] > 0 and result["records_per_s_p50"] > 0
    assert not ray.is_initialized()


def test_a_dead_actor_makes_searches_unavailable_not_wrong() -> None:
    """An actor process that dies (here: killed) fails the search as Unavailable, a
    fedmatch error the node maps to UNAVAILABLE, rather than answering with blocks missing."""
    engine = create_engine(DEFAULT_PARAM_SET, DIM, 2, backend="ray")
    try:
        gallery = unit_vectors(np.random.default_rng(3), RECORDS, DIM)
        engine.load(gallery)
        keys = shared_keys()
        evaluation = open_key_bundle(keys.public_bundle())
        probe = keys.encrypt_probe(capture(gallery[1], np.random.default_rng(4), 0.8))
        assert engine.search(evaluation, probe, 0.45, lambda: False).layout.rows == RECORDS
        ray.kill(engine._actors[1])  # type: ignore[attr-defined]
        with pytest.raises(Unavailable, match="search actor ended"):
            engine.search(evaluation, probe, 0.45, lambda: False)
    finally:
        engine.close()
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_an_unreachable_cluster_fails_fast_as_unavailable(address: str) -> None:
    """Nothing listens there: a clear Unavailable at once (ray.init would retry for
    minutes), and no Ray connection left behind."""
    with pytest.raises(Unavailable, match="no Ray cluster answers"):
        create_engine(DEFAULT_PARAM_SET, DIM, 1, backend="ray", ray_address=address)
    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["ray://10.0.0.7:10001", "fedmatch-ray-head.svc:6379"])
def test_a_cluster_beyond_loopback_needs_ray_tls(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clear templates go to the actors: never over Ray's plain gRPC to another machine."""
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    with pytest.raises(ConfigError, match="RAY_USE_TLS=1"):
        create_engine(DEFAULT_PARAM_SET, DIM, 1, backend="ray", ray_address=address)
    assert not ray.is_initialized()


def test_a_ray_node_answers_lookups_like_a_local_node(
    fed: tuple[Federation, NodeService],
) -> None:
    from fedmatch.he.ray_engine import RayEngine

    f, fr = fed
    it = f.nodes["IT"]
    assert isinstance(fr.engine, RayEngine) and fr.engine.workers == 2
    assert not isinstance(it.engine, RayEngine)
    ids_it, templates = it.store.templates()
    ids_fr, templates_fr = fr.store.templates()
    assert np.array_equal(templates, templates_fr) and np.array_equal(ids_it, ids_fr)

    requester = f.requester("DE")
    rng = np.random.default_rng(11)
    exact = templates.astype(np.float64)
    for row in (0, 4095, 4096, 8191, 8192, RECORDS - 1):
        probe = capture(templates[row], rng, 0.8)
        report = requester.lookup(probe, header("DE"))
        assert {n.member_state: n.outcome for n in report.nodes} == {"IT": "ok", "FR": "ok"}
        plain = np.flatnonzero(exact @ probe >= it.config.threshold)
        expected = {int(ids_it[i]) for i in plain}
        assert int(ids_it[row]) in expected
        assert _record_ids(it, report) == _record_ids(fr, report) == expected

    impostor = unit_vectors(rng, 1, DIM)[0]
    report = requester.lookup(impostor, header("DE"))
    assert {n.member_state: n.matches for n in report.nodes} == {"IT": 0, "FR": 0}


def test_engine_settings_come_from_the_config_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.toml"
    path.write_text(
        '[node]\nmember_state = "FR"\ndatabase = "fr.sqlite"\nengine = "ray"\nray_workers = 3\n'
    )
    assert load_node_config(None, {"member_state": "FR", "database": "x"}).engine == "local"
    monkeypatch.setenv("FEDMATCH_NODE_RAY_ADDRESS", "ray://ray-head.fr.example:10001")
    cfg = load_node_config(path)
    assert (cfg.engine, cfg.ray_workers, cfg.ray_address) == (
        "ray", 3, "ray://ray-head.fr.example:10001",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"engine": "spark"}, 'node.engine must be "local" or "ray"'),
        ({"ray_address": "auto"}, "need node.engine"),
        ({"ray_workers": 2}, "need node.engine"),
        ({"engine": "ray", "ray_address": "head:0"}, "node.ray_address must be"),
        ({"engine": "ray", "ray_address": "http://head:10001"}, "node.ray_address must be"),
        ({"engine": "ray", "ray_address": "ray://head"}, "node.ray_address must be"),
        ({"engine": "ray", "ray_workers": -1}, "node.ray_workers must be"),
    ],
)
def test_bad_engine_settings_fail_with_the_key_name(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        NodeConfig(member_state="FR", database=Path("fr.sqlite"), **settings)  # type: ignore[arg-type]
