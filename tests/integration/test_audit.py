"""Audit logs on a running federation: clean verification, tampering, forks, forged
signatures, searches off the record, and what the logs may never contain."""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedmatch.audit.access import AuditorRegistry
from fedmatch.audit.auditor import AuditResult, run_audit, run_stats
from fedmatch.audit.entry import AuditEvent, EventKind, SignedEntry, digest_hex, encode_entry
from fedmatch.audit.errors import AuditIntegrityError
from fedmatch.audit.log import AuditLog, scan_records
from fedmatch.audit.note import Note, NoteSigner, sign_note
from fedmatch.audit.party import COORDINATOR_ORIGIN, node_origin
from fedmatch.audit.servicer import AuditServicer
from fedmatch.audit.witness import Authorization
from fedmatch.cli.main import main
from fedmatch.domain import Category, EncryptedProbe, Purpose
from fedmatch.grpcutil.server import RunningServer, ServerLimits, start_server
from fedmatch.protocol.wire import authorization_to_pb, header_to_pb, probe_to_pb, signed_from_pb
from fedmatch.requester import Requester
from fedmatch.rpc.v1 import audit_pb2_grpc, node_pb2, node_pb2_grpc
from tests.federation import (
    TODAY,
    Federation,
    Keyring,
    auditor_config,
    auditor_signer,
    enrol,
    federation,
    header,
    request_signer,
    security,
    shared_keys,
    signed_lookup,
    signed_resolve,
    write_auditor_toml,
)

APPLICATION = TODAY.isoformat()
# The shared busy federation: its temp dir, the federation, and the probes it looked up.
Busy = tuple[Path, Federation, list[np.ndarray]]


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=128)
    return np.asarray(v / np.linalg.norm(v), dtype=np.float32)


@pytest.fixture(scope="module")
def busy(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Busy]:
    """A federation after twenty lookups (hits resolved by two verifiers, misses, one
    lookup refused by the coordinator), shared by the read-only tests of this module."""
    tmp = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(5)
    with federation(tmp, records=40) as fed:
        people = [_unit(rng) for _ in range(4)]
        for i, t in enumerate(people):
            enrol(fed.nodes["IT"], t, f"IT-{i}", Category.IRREGULAR_CROSSING, dt.date(2026, 5, 1))
        requester = fed.requester("DE")
        templates = []
        for i in range(20):
            probe = people[i % 4] if i % 5 == 0 else _unit(rng)
            templates.append(probe)
            h = requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", f"C-{i}")
            report = requester.lookup(probe, h)
            if report.matches:
                requester.resolve(report, APPLICATION, fed.verdicts(report))
        # A lookup the coordinator refuses (no operator named): logged as refused. It comes
        # from DE's real operator workstation and is signed, so that only the missing names
        # are wrong.
        anonymous = Requester(
            fed.coordinator_server.address, "DE", shared_keys("DE"), "", "",
            request_signer(tmp, "DE"), security(tmp, "operator-DE").channel_credentials(),
        )  # fmt: skip
        with pytest.raises(grpc.RpcError):
            anonymous.lookup(people[0], anonymous.header(Purpose.ASYLUM_DUBLIN, "x", "y"))
        anonymous.close()
        # A key registration from a state outside the federation: refused and logged.
        stranger = fed.requester("PL")
        with pytest.raises(grpc.RpcError):
            stranger.lookup(people[0], stranger.header(Purpose.ASYLUM_DUBLIN, "x", "y"))
        yield tmp, fed, templates


def _audit(tmp: Path, fed: Federation, **kw: object) -> AuditResult:
    return run_audit(auditor_config(tmp, fed, **kw))  # type: ignore[arg-type]


def test_untampered_federation_verifies_clean_and_again(busy: Busy, tmp_path: Path) -> None:
    tmp, fed, _ = busy
    state = tmp_path / "state"
    first = _audit(tmp, fed, state_dir=state)
    assert first.ok, first.report
    s = first.summary
    assert s["violations"] == 0 and s["evidence"] == []
    assert all(p["verified"] for p in s["parties"].values())
    # 20 lookups, each answered by IT and FR (DE asks; it is not searched).
    assert s["searches_checked"] == 40
    assert s["hit_reveals_checked"] == 4
    assert set(s["parties"]["fedmatch/coordinator"]["witnesses"]) == {
        "fedmatch/node/DE", "fedmatch/node/FR", "fedmatch/node/IT",
    }  # fmt: skip
    # A second audit against the saved state: consistency proofs from the last one.
    second = _audit(tmp, fed, state_dir=state)
    assert second.ok, second.report
    for origin, p in second.summary["parties"].items():
        assert p["tree_size"] >= s["parties"][origin]["tree_size"]
    # Exact counts (threshold 1: nothing suppressed) ...
    stats = run_stats(auditor_config(tmp, fed, state_dir=state), threshold=1)
    assert stats["searches"] == 20 and stats["searches_by_requesting_state"] == {"DE": 20}
    assert stats["hits_by_category_pair"] == {"applicant/irregular_crossing": 4}
    assert stats["refused_searches"]["coordinator"] == {"invalid_argument": 1}
    assert stats["refused_requests"] == {"register_keys": 1}
    assert stats["enrolments_by_category"] == {"irregular_crossing": 4}
    assert stats["hits_verified"] == 4 and stats["hits_rejected"] == 0
    # ... and as published: cells under 5 suppressed, so no one can be singled out.
    published = run_stats(auditor_config(tmp, fed, state_dir=state))
    assert published["searches"] == 20
    assert published["hits_by_category_pair"] == {"applicant/irregular_crossing": None}
    assert published["enrolments_by_category"] == {"irregular_crossing": None}


def test_cli_audit_verify_and_stats(
    busy: Busy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tmp, fed, _ = busy
    cfg = auditor_config(tmp, fed, state_dir=tmp_path / "cli-state")
    toml = write_auditor_toml(cfg, tmp_path / "auditor.toml")
    assert main(["audit", "verify", "--config", str(toml)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "RESULT: all logs verified" in "\n".join(out)
    assert json.loads(out[-1])["ok"] is True
    assert main(["audit", "stats", "--config", str(toml)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["searches_by_purpose"] == {"asylum_dublin": 20}


# -- tampering with a node's log on disk ------------------------------------------------


def _frames(path: Path) -> tuple[bytes, list[tuple[int, int]]]:
    data = path.read_bytes()
    records, _ = scan_records(data)
    return data, records


def _frame(entry: bytes) -> bytes:
    return struct.pack(">II", len(entry), zlib.crc32(entry)) + entry


def _edit(data: bytes, records: list[tuple[int, int]], k: int) -> bytes:
    start, length = records[k]
    entry = data[start : start + length]
    # Change the case reference, keeping the length, and fix the frame's CRC as a careful
    # intruder would.
    changed = entry.replace(b'"case_reference":"C-', b'"case_reference":"X-', 1)
    assert changed != entry
    return data[: start - 8] + _frame(changed) + data[start + length :]


def _delete(data: bytes, records: list[tuple[int, int]], k: int) -> bytes:
    start, length = records[k]
    return data[: start - 8] + data[start + length :]


def _reorder(data: bytes, records: list[tuple[int, int]], k: int) -> bytes:
    (s1, l1), (s2, l2) = records[k], records[k + 1]
    return data[: s1 - 8] + data[s2 - 8 : s2 + l2] + data[s1 - 8 : s1 + l1] + data[s2 + l2 :]


def _truncate(data: bytes, records: list[tuple[int, int]], k: int) -> bytes:
    return data[: records[k][0] - 8]


@pytest.mark.parametrize("tamper", [_edit, _delete, _reorder, _truncate])
@pytest.mark.parametrize("audited_before", [False, True])
def test_tampered_node_log_is_detected(
    tmp_path: Path, tamper: object, audited_before: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(9)
    with federation(tmp_path, records=20) as fed:
        requester = fed.requester("DE")
        for i in range(4):
            h = requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", f"C-{i}")
            requester.lookup(_unit(rng), h)
        if audited_before:
            assert _audit(tmp_path, fed).ok
        path = tmp_path / "audit-IT" / "log" / "log.bin"
        data, records = _frames(path)
        answered = [
            k
            for k, (s, n) in enumerate(records)
            if SignedEntry.decode(data[s : s + n]).kind is EventKind.SEARCH_ANSWERED
        ]
        path.write_bytes(tamper(data, records, answered[1]))  # type: ignore[operator]
        # `fedmatch audit verify` fails (exit 6) and its report names IT and the evidence.
        toml = write_auditor_toml(
            auditor_config(tmp_path, fed, tmp_path / "cli"), tmp_path / "a.toml"
        )
        assert main(["audit", "verify", "--config", str(toml)]) == 6
        out = capsys.readouterr().out
        assert "VIOLATION [IT]" in out and "evidence:" in out
        assert json.loads(out.strip().splitlines()[-1])["ok"] is False
        result = _audit(tmp_path, fed)
        assert not result.ok
        bad = [f for f in result.findings if f.severity == "violation" and f.party == "IT"]
        assert bad, result.report
        assert bad[0].evidence and Path(bad[0].evidence).exists()
        assert "[IT]" in result.report and "fedmatch/node/IT" in result.report
        assert not result.summary["parties"]["fedmatch/node/IT"]["verified"]
        # The other parties still verify: the finding is about IT only.
        assert result.summary["parties"]["fedmatch/node/FR"]["verified"]
        # And the node itself refuses to restart on the altered log.
        signer = NoteSigner.load(Keyring(tmp_path / "keys").path(node_origin("IT")))
        with pytest.raises(AuditIntegrityError):
            AuditLog(path.parent, signer, node_origin("IT"))


def test_rewritten_history_after_a_restart_is_a_fork(tmp_path: Path) -> None:
    """The intruder rewrites the node's log, deletes its checkpoint and lets the node sign
    the new history: the auditor's saved checkpoint exposes it."""
    rng = np.random.default_rng(3)
    with federation(tmp_path, records=10, states=("DE", "IT")) as fed:
        requester = fed.requester("DE")
        for i in range(3):
            h = requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", f"C-{i}")
            requester.lookup(_unit(rng), h)
        assert _audit(tmp_path, fed).ok
        # Serve, from IT's address space, a log with IT's key whose history differs.
        keys = Keyring(tmp_path / "keys")
        signer = NoteSigner.load(keys.path(node_origin("IT")))
        fake = AuditLog(tmp_path / "rewritten", signer, node_origin("IT"))
        size = fed.nodes["IT"].audit.log.size
        for _ in range(size + 2):
            fake.append(AuditEvent(EventKind.PARTY_STARTED, counts={"records": 0}))
        with _serve_log(tmp_path, "node-IT", fake) as server:
            result = _audit(tmp_path, fed, addresses={"IT": server.address})
        fake.close()
        assert not result.ok
        kinds = {f.kind for f in result.findings if f.party == "IT"}
        assert kinds & {"inconsistent-saved", "fork-saved"}, result.report
        evidence = json.loads(Path(next(f.evidence for f in result.findings if f.party == "IT"))
                              .read_text())  # fmt: skip
        assert "saved_checkpoint" in evidence and "presented_checkpoint" in evidence


class _serve_log:  # noqa: N801 - used as a context manager like a function
    """``log`` served by someone holding ``party``'s TLS credentials (``node-IT``,
    ``coordinator``): the auditor reaches it as that party."""

    def __init__(self, tmp: Path, party: str, log: AuditLog, checkpoint: object = None) -> None:
        self.tmp, self.party, self.log, self.checkpoint = tmp, party, log, checkpoint

    def __enter__(self) -> RunningServer:
        servicer = AuditServicer(
            self.log,
            AuditorRegistry([auditor_signer(self.tmp).vkey()]),
            checkpoint=self.checkpoint,  # type: ignore[arg-type]
        )
        self.server = start_server(
            lambda s: audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, s),
            "127.0.0.1:0",
            ServerLimits(max_receive_bytes=1 << 20, max_send_bytes=64 << 20),
            security(self.tmp, self.party).server_credentials(),
        )
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0.2)


def test_two_histories_shown_to_two_auditors_are_caught(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    with federation(tmp_path, records=10, states=("DE", "IT")) as fed:
        requester = fed.requester("DE")
        for i in range(2):
            h = requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", f"C-{i}")
            requester.lookup(_unit(rng), h)
        # Auditor A sees IT's real log.
        a_state = tmp_path / "auditor-a"
        assert _audit(tmp_path, fed, state_dir=a_state).ok
        # IT shows auditor B another history: its real entries up to now, then others.
        signer = NoteSigner.load(Keyring(tmp_path / "keys").path(node_origin("IT")))
        other = AuditLog(tmp_path / "other-history", signer, node_origin("IT"))
        real = fed.nodes["IT"].audit.log
        for raw in real.entries(0, real.size)[:3]:
            other.append(SignedEntry.decode(raw).event)
        while other.size < real.size + 1:
            other.append(AuditEvent(EventKind.PARTY_STARTED, counts={"records": 0}))
        with _serve_log(tmp_path, "node-IT", other) as server:
            b = _audit(
                tmp_path, fed, state_dir=tmp_path / "auditor-b",
                addresses={"IT": server.address}, peers=(a_state,),
            )  # fmt: skip
        other.close()
        assert not b.ok
        finding = next(f for f in b.findings if f.party == "IT")
        assert finding.kind.endswith("-peer"), b.report
        evidence = json.loads(Path(finding.evidence).read_text())
        assert evidence["peer_checkpoint"] != evidence["presented_checkpoint"]


def test_replaced_checkpoint_signature_is_detected(tmp_path: Path) -> None:
    with federation(tmp_path, records=5, states=("DE", "IT")) as fed:
        log = fed.nodes["IT"].audit.log
        impostor = NoteSigner.generate(node_origin("IT"))

        def forged(fresh: bool) -> bytes:
            body = Note.parse(log.checkpoint()).body
            return sign_note(body, impostor)

        with _serve_log(tmp_path, "node-IT", log, forged) as server:
            result = _audit(tmp_path, fed, addresses={"IT": server.address})
        assert not result.ok
        finding = next(f for f in result.findings if f.party == "IT")
        assert finding.kind == "bad-checkpoint-signature"
        assert Path(finding.evidence).exists()


def test_replaced_witness_cosignature_is_detected(tmp_path: Path) -> None:
    with federation(tmp_path, records=5, states=("DE", "IT")) as fed:
        coord = fed.coordinator

        def forged(fresh: bool) -> bytes:
            text = coord.published_checkpoint(fresh)
            note = Note.parse(text)
            sigs = [
                s if s.name != node_origin("IT") else type(s)(s.name, s.key_id,
                                                                s.value[:8] + bytes(64))
                for s in note.signatures
            ]  # fmt: skip
            return Note(note.body, tuple(sigs)).text()

        with _serve_log(tmp_path, "coordinator", coord.audit.log, forged) as server:
            result = _audit(tmp_path, fed, addresses={"coordinator": server.address})
        assert not result.ok
        assert any(f.kind == "bad-cosignature" for f in result.findings), result.report


# -- no search off the record -----------------------------------------------------------


def _search_request(fed: Federation, auth: Authorization | None) -> node_pb2.SearchRequest:
    """A search signed by DE's operator (only its record in the coordinator's log varies)."""
    keys = shared_keys("DE")
    fed.requester("DE").register_keys(header("DE"))
    h = header("DE")
    probe = EncryptedProbe(
        keys.params.name, keys.encrypt_probe(_unit(np.random.default_rng(1))),
        "sface-2021dec-int8bq", 128, keys.key_id,
    )  # fmt: skip
    return node_pb2.SearchRequest(
        header=header_to_pb(h, signed_lookup(fed.tmp, h, probe.ciphertext)),
        probe=probe_to_pb(probe),
        threshold_version="2026-11-v1",
        authorization=authorization_to_pb(auth) if auth else None,
    )


def test_search_not_on_a_verified_checkpoint_is_refused_before_he_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with federation(tmp_path, records=5, states=("DE", "IT")) as fed:
        node = fed.nodes["IT"]
        calls: list[int] = []
        real_search = node.engine.search

        def spy(*args: object, **kwargs: object) -> object:
            calls.append(1)
            return real_search(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(node.engine, "search", spy)
        stub = node_pb2_grpc.NodeServiceStub(fed.node_channel("IT"))  # as the coordinator
        clog = fed.coordinator.audit.log
        request = _search_request(fed, None)
        h = request.header
        signed = signed_from_pb(h)
        assert signed is not None
        entry_for = header("DE")
        coordinator_key = NoteSigner.load(Keyring(tmp_path / "keys").path(COORDINATOR_ORIGIN))
        # (1) no authorization at all
        cases = {"missing": request}
        # (2) a real coordinator entry for this search, in a tree the node never witnessed
        event = AuditEvent(
            EventKind.SEARCH_AUTHORIZED, query_id=h.query_id, requesting_state="DE",
            purpose="asylum_dublin", legal_basis=h.legal_basis, case_reference=h.case_reference,
            unit=h.requesting_unit, operator=h.operator_id,
            probe_hash=digest_hex(request.probe.ciphertext), registers=("IT",),
            labels={"key_id": request.probe.key_id, "request": signed.digest()},
        )  # fmt: skip
        entry = clog.append(event)
        unwitnessed = Authorization(
            entry.raw, entry.seq, clog.size, tuple(clog.inclusion_proof(entry.seq, clog.size))
        )
        cases["unwitnessed"] = _with(request, unwitnessed)
        _assert_refused(stub, cases)  # before anything witnesses that tree size
        cases.clear()
        # (3) witnessed, but the entry is for another query
        auth, failed = fed.coordinator.witnesses.authorize(entry, ["IT"], 10)
        assert not failed
        other = node_pb2.SearchRequest()
        other.CopyFrom(request)
        other.header.query_id = entry_for.query_id
        cases["other-query"] = _with(other, auth)
        # (4) an entry signed by someone else, at a witnessed index
        forged = encode_entry(NoteSigner.generate(COORDINATOR_ORIGIN), COORDINATOR_ORIGIN,
                              entry.seq, entry.unix_ms, event)  # fmt: skip
        cases["forged"] = _with(request, Authorization(forged.raw, auth.index, auth.tree_size,
                                                       auth.proof))  # fmt: skip
        assert coordinator_key.name == COORDINATOR_ORIGIN
        _assert_refused(stub, cases)
        assert calls == [], "HE work ran for a search off the record"
        # Each refusal is itself in the node's log, with its reason.
        refused = [e for e in node.audit.log.iter_entries() if e.kind is EventKind.SEARCH_REFUSED]
        assert len(refused) >= 4
        assert all(e.event.reason == "permission_denied:PermissionDenied" for e in refused)
        # The honest path still works: the very same request with its real authorization.
        response = stub.Search(_with(request, auth), timeout=60)
        assert response.member_state == "IT" and calls == [1]


def _assert_refused(
    stub: node_pb2_grpc.NodeServiceStub, cases: dict[str, node_pb2.SearchRequest]
) -> None:
    for name, req in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert "on record" in (err.value.details() or ""), name


def _with(request: node_pb2.SearchRequest, auth: Authorization) -> node_pb2.SearchRequest:
    out = node_pb2.SearchRequest()
    out.CopyFrom(request)
    out.authorization.CopyFrom(authorization_to_pb(auth))
    return out


def test_hit_details_need_a_logged_verification(
    busy: Busy,
) -> None:
    _, fed, templates = busy
    requester = fed.requester("DE")
    h = requester.header(Purpose.ASYLUM_DUBLIN, "Reg. (EU) 2024/1358 Art. 27", "C-v")
    report = requester.lookup(templates[0], h)
    assert report.matches
    with pytest.raises(grpc.RpcError) as err:
        requester.resolve(report, APPLICATION, fed.verdicts(report, ["anna"]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        requester.resolve(report, APPLICATION, fed.verdicts(report, ["anna", "anna"]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Direct to the node (as the coordinator, with DE's signed resolve), without the
    # coordinator's hit_verified entry: refused.
    stub = node_pb2_grpc.NodeServiceStub(fed.node_channel("IT"))
    with pytest.raises(grpc.RpcError) as err:
        stub.GetHitDetails(
            node_pb2.HitDetailsRequest(
                header=header_to_pb(report.header, signed_resolve(fed.tmp, report.header)),
                handles=[report.matches[0][1]],
            ),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "not on record" in (err.value.details() or "")


# -- privacy ----------------------------------------------------------------------------


def test_logs_never_hold_templates_probes_or_scores(
    busy: Busy,
) -> None:
    tmp, fed, templates = busy
    blobs = b"".join(
        p.read_bytes()
        for p in tmp.rglob("*")
        if p.is_file() and ("audit-" in str(p) or "auditor" in str(p)) and p.suffix != ".key"
    )
    assert len(blobs) > 10_000
    for t in templates:
        raw = t.astype(np.float32).tobytes()
        for i in range(0, len(raw) - 16, 16):
            assert raw[i : i + 16] not in blobs
        assert base64.b64encode(raw[:24]) not in blobs
        for x in t[:8]:
            assert f"{x:.6f}".encode() not in blobs
    # The entries themselves: only the declared fields, short labels, integer counts.
    for party in ("coordinator", "IT", "FR", "DE"):
        log = fed.coordinator.audit.log if party == "coordinator" else fed.nodes[party].audit.log
        for e in log.iter_entries():
            obj = json.loads(e.raw.rpartition(b"\n")[0])
            assert set(obj) == {"v", "seq", "party", "time_ms", "event"}
            for value in obj["event"].get("counts", {}).values():
                assert isinstance(value, int)
            assert "score" not in json.dumps(obj).lower()
            assert len(e.raw) < 4096
