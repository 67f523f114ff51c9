"""Proof documents and search bundles (fedmatch.audit.proofs) on a local log: they verify
against the party's key only, and every malformed or altered part fails with
AuditVerificationError (never another exception)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedmatch.audit.auditor import PartyState
from fedmatch.audit.entry import AuditEvent, EventKind
from fedmatch.audit.errors import AuditVerificationError
from fedmatch.audit.log import AuditLog
from fedmatch.audit.note import NoteSigner, NoteVerifier
from fedmatch.audit.party import node_origin
from fedmatch.audit.proofs import (
    EntryFilter,
    build_bundle,
    consistency_document,
    inclusion_document,
    load_document,
    verify_bundle,
    verify_proof_document,
)
from fedmatch.audit.readers import PartyLog, local_verifiers, open_local
from fedmatch.errors import InvalidInput

ORIGIN = node_origin("IT")


@pytest.fixture
def party(tmp_path: Path) -> Iterator[tuple[PartyLog, dict[str, NoteVerifier], bytes]]:
    """IT's log of 11 entries (every third about query q-1), as an auditor saved it after a
    first checkpoint at size 5, and the auditor's trusted keys."""
    signer = NoteSigner.generate(ORIGIN)
    log = AuditLog(tmp_path / "log", signer, ORIGIN)
    for i in range(5):
        log.append(AuditEvent(EventKind.SEARCH_ANSWERED, query_id=f"q-{i % 3}"))
    old = log.checkpoint()
    for i in range(5, 11):
        log.append(AuditEvent(EventKind.SEARCH_ANSWERED, query_id=f"q-{i % 3}"))
    state = tmp_path / "state"
    PartyState(state, ORIGIN).save(log.checkpoint(), log.entries(0, log.size), signer.vkey())
    log.close()
    (verifier,) = local_verifiers(state)
    yield open_local(state, verifier), {ORIGIN: verifier}, old


def test_documents_verify_and_say_what_they_show(
    party: tuple[PartyLog, dict[str, NoteVerifier], bytes],
) -> None:
    log, keys, old = party
    shown = verify_proof_document(inclusion_document(log, 7), keys)
    assert shown["index"] == 7 and shown["tree_size"] == 11
    signed = verify_proof_document(consistency_document(log, 5, None, old), keys)
    assert signed["old_checkpoint_signed"] is True and signed["size2"] == 11
    unsigned = verify_proof_document(consistency_document(log, 3), keys)
    assert unsigned["old_checkpoint_signed"] is False and "not signed" in unsigned["shows"]
    bundle = build_bundle("q-1", [log])
    result = verify_bundle(bundle, keys)
    assert [e.split(":")[0] for e in result["parties"][ORIGIN]["entries"]] == ["1", "4", "7", "10"]
    # A wrong old checkpoint is refused when the document is made.
    with pytest.raises(AuditVerificationError, match="older checkpoint"):
        consistency_document(log, 4, None, old)
    with pytest.raises(InvalidInput, match="no log holds"):
        build_bundle("q-9", [log])


def test_entry_filter(party: tuple[PartyLog, dict[str, NoteVerifier], bytes]) -> None:
    log, _, _ = party
    f = EntryFilter.from_args(["search_answered"], "q-2", "2000-01-01", None)
    assert [e.seq for e in log.decoded if f.matches(e)] == [2, 5, 8]
    assert not any(
        EntryFilter.from_args([], "", None, "2000-01-01").matches(e) for e in log.decoded
    )
    with pytest.raises(InvalidInput, match="unknown entry kind"):
        EntryFilter.from_args(["no_such_kind"], "", None, None)
    with pytest.raises(InvalidInput, match="later than"):
        EntryFilter.from_args([], "", "2026-02-01", "2026-01-01")


def _edits() -> dict[str, Callable[[dict[str, Any]], object]]:
    def entry(d: dict[str, Any]) -> dict[str, Any]:
        return d["parties"][0]["entries"][0]  # type: ignore[no-any-return]

    return {
        "not a bundle": lambda d: d.update(type="x"),
        "no parties": lambda d: d.update(parties="x"),
        "party not an object": lambda d: d["parties"].append(3),
        "unknown log": lambda d: d["parties"][0].update(origin="fedmatch/node/FR"),
        "log twice": lambda d: d["parties"].append(copy.deepcopy(d["parties"][0])),
        "other key id": lambda d: d["parties"][0].update(key_id="00000000"),
        "checkpoint missing": lambda d: d["parties"][0].pop("checkpoint"),
        "entries not a list": lambda d: d["parties"][0].update(entries={}),
        "entry not base64": lambda d: entry(d).update(entry="%%%"),
        "entry moved": lambda d: entry(d).update(index=entry(d)["index"] + 3),
        "negative index": lambda d: entry(d).update(index=-1),
        "hashes missing": lambda d: entry(d).pop("hashes"),
        "hash not base64": lambda d: entry(d)["hashes"].__setitem__(0, 5),
        "proof shortened": lambda d: entry(d)["hashes"].pop(),
        "leaf hash wrong": lambda d: entry(d).update(leaf_hash="00" * 32),
        "other query": lambda d: d.update(query_id="q-2"),
        "no entries": lambda d: d["parties"][0].update(entries=[]),
    }


@pytest.mark.parametrize("name", list(_edits()))
def test_altered_bundle_fails(
    name: str, party: tuple[PartyLog, dict[str, NoteVerifier], bytes]
) -> None:
    log, keys, _ = party
    bundle = build_bundle("q-1", [log])
    _edits()[name](bundle)
    with pytest.raises(AuditVerificationError):
        verify_bundle(bundle, keys)


def test_altered_proof_and_unreadable_files_fail(
    party: tuple[PartyLog, dict[str, NoteVerifier], bytes],
) -> None:
    log, keys, old = party
    doc = consistency_document(log, 5, None, old)
    for key, value in (("size1", 4), ("size2", 10), ("type", "x"), ("hashes", [])):
        with pytest.raises(AuditVerificationError):
            verify_proof_document({**doc, key: value}, keys)
    with pytest.raises(AuditVerificationError, match="no trusted verifier key"):
        verify_proof_document(doc, {})
    for data in (b"{", b"[]", json.dumps("x").encode()):
        with pytest.raises(AuditVerificationError):
            load_document(data, "proof file")
