"""Who may read a party's log (fedmatch.audit.access): signed auditor requests, a time window
and single-use nonces, all checked before anything is read."""

from __future__ import annotations

import time

import pytest

from fedmatch.audit.access import MAX_QUERY_BYTES, REQUEST_DOMAIN, AuditorRegistry, sign_query
from fedmatch.audit.note import NoteSigner
from fedmatch.errors import ConfigError, InvalidInput, PermissionDenied
from fedmatch.rpc.v1 import audit_pb2

AUDITOR = NoteSigner.generate("edps-auditor-1")
SECOND = NoteSigner.generate("dpa-IT")
STRANGER = NoteSigner.generate("someone-else")
IMPOSTOR = NoteSigner.generate("edps-auditor-1")  # the auditor's name, another key
METHOD = "GetEntries"
NOW = 1_767_225_600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def registry(clock: Clock | None = None, window: float = 300.0) -> AuditorRegistry:
    return AuditorRegistry(
        [AUDITOR.vkey(), SECOND.vkey()], window_seconds=window, clock=clock or Clock(NOW)
    )


def request(
    signer: NoteSigner = AUDITOR,
    *,
    issued: float = NOW,
    nonce: bytes = b"n" * 16,
    method: str = METHOD,
    auditor: str | None = None,
    key: NoteSigner | None = None,
) -> audit_pb2.AuditRequest:
    """A request with every field chosen, signed by ``key`` (default: ``signer``)."""
    query = audit_pb2.AuditQuery(
        auditor=signer.name if auditor is None else auditor,
        issued_unix_ms=int(issued * 1000),
        nonce=nonce,
        method=method,
        start=0,
        end=10,
    ).SerializeToString()
    return audit_pb2.AuditRequest(
        query=query, signature=(key or signer).sign(REQUEST_DOMAIN + query)
    )


def test_valid_signed_query_is_accepted() -> None:
    query = registry().check(request(), METHOD)
    assert (query.auditor, query.method, query.start, query.end) == (AUDITOR.name, METHOD, 0, 10)
    assert query.nonce == b"n" * 16


def test_sign_query_builds_an_accepted_request() -> None:
    reg = AuditorRegistry([AUDITOR.vkey()], clock=time.time)
    signed = sign_query(AUDITOR, "GetInclusionProof", index=3, tree_size=9)
    query = reg.check(signed, "GetInclusionProof")
    assert (query.index, query.tree_size, len(query.nonce)) == (3, 9, 16)
    # Two calls never share a nonce.
    assert sign_query(AUDITOR, METHOD).query != sign_query(AUDITOR, METHOD).query


def test_every_configured_auditor_is_served() -> None:
    reg = registry()
    assert reg.check(request(SECOND), METHOD).auditor == SECOND.name


def test_unknown_auditor_is_refused() -> None:
    with pytest.raises(PermissionDenied, match="not an auditor of this party"):
        registry().check(request(STRANGER), METHOD)
    with pytest.raises(PermissionDenied, match="not an auditor of this party"):
        registry().check(request(auditor=""), METHOD)


@pytest.mark.parametrize("how", ["impostor-key", "flipped-bit", "empty", "truncated", "no-domain"])
def test_bad_signature_is_refused(how: str) -> None:
    good = request()
    if how == "impostor-key":
        bad = request(key=IMPOSTOR)
    elif how == "flipped-bit":
        sig = bytearray(good.signature)
        sig[10] ^= 0x04
        bad = audit_pb2.AuditRequest(query=good.query, signature=bytes(sig))
    elif how == "empty":
        bad = audit_pb2.AuditRequest(query=good.query)
    elif how == "truncated":
        bad = audit_pb2.AuditRequest(query=good.query, signature=good.signature[:63])
    else:
        bad = audit_pb2.AuditRequest(query=good.query, signature=AUDITOR.sign(good.query))
    with pytest.raises(PermissionDenied, match="audit request signature does not verify"):
        registry().check(bad, METHOD)


def test_query_altered_after_signing_is_refused() -> None:
    good = request()
    query = audit_pb2.AuditQuery()
    query.ParseFromString(good.query)
    query.end = 1_000_000
    altered = audit_pb2.AuditRequest(query=query.SerializeToString(), signature=good.signature)
    with pytest.raises(PermissionDenied, match="signature does not verify"):
        registry().check(altered, METHOD)


def test_wrong_method_is_refused() -> None:
    with pytest.raises(PermissionDenied, match="audit request was signed for 'GetEntries'"):
        registry().check(request(), "GetConsistencyProof")


@pytest.mark.parametrize("offset", [-300.001, -3600.0, 300.001, 86_400.0])
def test_timestamp_outside_the_window_is_refused(offset: float) -> None:
    with pytest.raises(PermissionDenied, match="outside the accepted window"):
        registry().check(request(issued=NOW + offset), METHOD)


@pytest.mark.parametrize("offset", [-300.0, -1.0, 0.0, 1.0, 300.0])
def test_timestamp_inside_the_window_is_accepted(offset: float) -> None:
    assert registry().check(request(issued=NOW + offset), METHOD).auditor == AUDITOR.name


def test_clock_is_injected() -> None:
    clock = Clock(NOW)
    reg = registry(clock, window=60)
    req = request(nonce=b"a" * 16)
    clock.now = NOW + 61
    with pytest.raises(PermissionDenied, match="outside the accepted window"):
        reg.check(req, METHOD)
    clock.now = NOW + 59
    assert reg.check(req, METHOD).nonce == b"a" * 16


def test_replayed_nonce_is_refused() -> None:
    reg = registry()
    req = request()
    reg.check(req, METHOD)
    with pytest.raises(PermissionDenied, match="nonce was already used"):
        reg.check(req, METHOD)
    # The nonce is spent, whatever else the new request says.
    with pytest.raises(PermissionDenied, match="nonce was already used"):
        reg.check(request(issued=NOW + 1), METHOD)
    assert reg.check(request(nonce=b"m" * 16), METHOD).nonce == b"m" * 16


def test_replay_is_refused_for_as_long_as_the_request_is_valid() -> None:
    # A request dated up to one window ahead stays valid until a window after its date;
    # its nonce must be remembered that long, not just one window after first use.
    clock = Clock(NOW)
    reg = registry(clock)
    req = request(issued=NOW + 250)
    reg.check(req, METHOD)
    for later in (100.0, 301.0, 349.0, 549.0):
        clock.now = NOW + later
        reg.check(request(nonce=bytes([int(later) % 256]) * 16, issued=clock.now), METHOD)
        with pytest.raises(PermissionDenied, match="nonce was already used"):
            reg.check(req, METHOD)
    clock.now = NOW + 551  # the request itself has expired now
    with pytest.raises(PermissionDenied, match="outside the accepted window"):
        reg.check(req, METHOD)


def test_expired_nonces_are_forgotten() -> None:
    clock = Clock(NOW)
    reg = registry(clock)
    for i in range(5):
        reg.check(request(nonce=bytes([i]) * 16), METHOD)
    clock.now = NOW + 400
    reg.check(request(nonce=b"z" * 16, issued=clock.now), METHOD)
    assert list(reg._seen) == [b"z" * 16]


@pytest.mark.parametrize("nonce", [b"", b"x" * 8, b"x" * 15, b"x" * 17, b"x" * 32])
def test_nonce_must_be_16_bytes(nonce: bytes) -> None:
    with pytest.raises(InvalidInput, match="nonce must be 16 bytes"):
        registry().check(request(nonce=nonce), METHOD)


def test_oversize_query_is_refused_before_parsing() -> None:
    big = request(method="M" * MAX_QUERY_BYTES)
    assert len(big.query) > MAX_QUERY_BYTES
    with pytest.raises(InvalidInput, match=f"audit query exceeds {MAX_QUERY_BYTES} bytes"):
        registry().check(big, "M" * MAX_QUERY_BYTES)


@pytest.mark.parametrize("query", [b"\xff", b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x1a\x80"])
def test_unparseable_query_is_refused(query: bytes) -> None:
    bad = audit_pb2.AuditRequest(query=query, signature=AUDITOR.sign(REQUEST_DOMAIN + query))
    with pytest.raises(InvalidInput, match="audit query does not parse"):
        registry().check(bad, METHOD)


def test_checks_come_before_the_nonce_is_spent() -> None:
    # A refused request (wrong method) must not burn its nonce for the real one.
    reg = registry()
    with pytest.raises(PermissionDenied, match="was signed for"):
        reg.check(request(), "GetCheckpoint")
    assert reg.check(request(), METHOD).nonce == b"n" * 16


def test_registry_refuses_bad_auditor_keys() -> None:
    with pytest.raises(ConfigError, match="auditors: not a verifier key"):
        AuditorRegistry(["not-a-key"])
    with pytest.raises(ConfigError, match="auditors: not a verifier key"):
        AuditorRegistry([AUDITOR.cosigner_vkey()])  # a witness key is not an auditor key
