"""A federation on the kernel parameter set, end to end over real gRPC: the set is one
setting (``he_param_set``) at the coordinator and every node; a requester without a key
file follows the set the federation announces, one with a key pair of another set is told
what to generate, and the coordinator refuses such keys before any fan-out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from coordinator.config import CoordinatorConfig
from fedmatch.cli.main import main
from fedmatch.demo.synthetic import capture, unit_vectors
from fedmatch.domain import Category
from fedmatch.errors import ConfigError
from fedmatch.he.kernel_engine import KernelEngine
from fedmatch.he.keypair import RequesterKeys
from fedmatch.he.params import DEFAULT_PARAM_SET, KERNEL_PARAM_SET
from fedmatch.requester.client import Requester
from fedmatch.requester.keyfile import load_keys
from node.config import NodeConfig
from tests.federation import (
    DIM,
    OPERATOR,
    UNIT,
    Federation,
    enrol,
    federation,
    header,
    request_signer,
    security,
    shared_keys,
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with federation(
        tmp_path_factory.mktemp("kernel-fed"), ("DE", "IT"), records=300,
        he_param_set=KERNEL_PARAM_SET.name,
    ) as f:  # fmt: skip
        yield f


def _requester(fed: Federation, keys: RequesterKeys | None) -> Requester:
    r = Requester(
        fed.coordinator_server.address, "DE", keys, UNIT, OPERATOR,
        request_signer(fed.tmp, "DE"), security(fed.tmp, "operator-DE").channel_credentials(),
    )  # fmt: skip
    fed.stack.callback(r.close)
    return r


def test_a_kernel_federation_finds_the_person_with_keys_of_its_set(fed: Federation) -> None:
    assert isinstance(fed.nodes["IT"].engine, KernelEngine)
    rng = np.random.default_rng()
    person = unit_vectors(rng, 1, DIM)[0]
    ref = f"IT-{rng.integers(10**9)}"
    enrol(fed.nodes["IT"], capture(person, rng, 0.85), ref, Category.APPLICANT,
          dt.date(2026, 5, 20), "Roma")  # fmt: skip
    requester = _requester(fed, None)
    report = requester.lookup(capture(person, rng, 0.85), header("DE"))
    # Without a key file the session's pair is generated for the announced set.
    assert requester.keys.params == KERNEL_PARAM_SET
    assert [(n.member_state, n.outcome, n.matches) for n in report.nodes] == [("IT", "ok", 1)]
    assert [s for s, _ in report.matches] == ["IT"]
    # A stranger is not found.
    stranger = requester.lookup(unit_vectors(rng, 1, DIM)[0], header("DE"))
    assert stranger.matches == ()


def test_keys_of_another_set_are_refused_before_any_node_sees_them(fed: Federation) -> None:
    before = fed.coordinator.audit.log.size
    requester = _requester(fed, shared_keys("DE"))
    assert requester.keys.params == DEFAULT_PARAM_SET
    with pytest.raises(grpc.RpcError) as refused:
        requester.lookup(unit_vectors(np.random.default_rng(), 1, DIM)[0], header("DE"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details() or ""
    assert KERNEL_PARAM_SET.name in details
    assert "fedmatch keys generate --param-set" in details
    # Nothing was registered: no keys_registered entry after the refusal.
    kinds = [e.kind.value for e in fed.coordinator.audit.log.iter_entries(before)]
    assert "keys_registered" not in kinds


def test_an_unknown_parameter_set_is_a_configuration_error(tmp_path: Path) -> None:
    for make in (
        lambda: NodeConfig(member_state="DE", database=tmp_path / "n.sqlite", he_param_set="x"),
        lambda: CoordinatorConfig(he_param_set="ckks-n4096"),
    ):
        with pytest.raises(ConfigError) as refused:
            make()
        assert KERNEL_PARAM_SET.name in str(refused.value)
        assert DEFAULT_PARAM_SET.name in str(refused.value)


def test_keys_generate_takes_the_federations_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kernel.keys"
    assert main(["keys", "generate", "--out", str(out), "--param-set", KERNEL_PARAM_SET.name]) == 0
    assert load_keys(out).params == KERNEL_PARAM_SET
    assert main(["keys", "generate", "--out", str(tmp_path / "x"), "--param-set", "nope"]) == 2
    assert KERNEL_PARAM_SET.name in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
