"""`fedmatch bench flood` end to end, small: three real node processes and a coordinator over
mutual TLS, honest lookups of FR alone and then while two flooder processes attack as DE
with DE's own certificates. The JSON's shape, every honest lookup answered, and each attack
tried and refused with the codes that say why. No timing is asserted: the 2x target is what
the benchmark measures, not what a test on a shared machine can promise. About 45 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ATTACKS = {
    "watch_streams", "oversize", "malformed", "no_client_cert", "plaintext",
    "key_registrations", "lookups",
}  # fmt: skip
# What must have refused each attack (at least once), and what none of its attempts may be.
REFUSED_WITH = {
    # Only the coordinator may watch a node's or the coordinator's health.
    "watch_streams": "PERMISSION_DENIED",
    # Beyond the servers' receive bound: refused by gRPC before anything is parsed.
    "oversize": "RESOURCE_EXHAUSTED",
    # Parsed once admitted (INTERNAL, as gRPC answers), unparsed when a rule refuses.
    "malformed": "INTERNAL",
    # No client certificate, or no TLS at all: no connection.
    "no_client_cert": "UNAVAILABLE",
    "plaintext": "UNAVAILABLE",
    # Beyond DE's share of the coordinator, or its quota of new key bundles.
    "key_registrations": "RESOURCE_EXHAUSTED",
    "lookups": "RESOURCE_EXHAUSTED",
}
NEVER_OK = {"watch_streams", "oversize", "malformed", "no_client_cert", "plaintext"}


def test_bench_flood_prints_json_with_honest_lookups_answered_and_attacks_refused(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "fedmatch", "bench", "flood", "--nodes", "3",
            "--records-per-node", "200", "--quiet-seconds", "3", "--flood-seconds", "8",
            "--flooders", "2", "--registration-threads", "8", "--workdir", str(tmp_path / "fl"),
            # A burst of 2: the quota is reached within the short flood however slowly the
            # machine validates bundles (under load, 7 registrations in 8 s left 10 unspent).
            "--registration-burst", "2",
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "flood"
    assert (result["nodes"], result["flooders"], result["transport"]) == (3, 2, "mtls")
    assert (result["honest_state"], result["hostile_state"]) == ("FR", "DE")

    # Honest lookups in both phases, every one answered by every node.
    assert result["honest_errors"] == {"count": 0, "kinds": {}}
    for phase in ("quiet", "flood"):
        assert result[phase]["lookups"] >= 1, phase
        assert result[phase]["errors"]["count"] == 0, phase
        assert 0 < result[phase]["p50_s"] <= result[phase]["p95_s"] <= result[phase]["max_s"]
    assert result["flood_over_quiet_p50"] > 0
    assert result["target_ratio"] == 2.0 and isinstance(result["within_target"], bool)

    # Every attack was tried, and refused for its reason.
    attacks = result["attacks"]
    assert set(attacks) == ATTACKS
    for name, tally in attacks.items():
        assert tally["attempts"] > 0, name
        assert sum(tally["outcomes"].values()) == tally["attempts"], name
        assert tally["outcomes"].get(REFUSED_WITH[name], 0) > 0, (name, tally)
        if name in NEVER_OK:
            assert "OK" not in tally["outcomes"], (name, tally)
    assert attacks["oversize"]["resource_exhausted_by"].get("size", 0) > 0
    # A rule refuses a malformed body unparsed: a DE operator may not search a node.
    assert attacks["malformed"]["outcomes"].get("PERMISSION_DENIED", 0) > 0
    assert attacks["lookups"]["resource_exhausted_by"].get("share", 0) > 0
    assert result["flooder_threads_stuck"] == 0

    # Every server measured in both phases, and before, during and after the flood.
    servers = {"DE", "IT", "FR", "coordinator"}
    assert set(result["server_cores_busy"]) == set(result["memory_mb"]) == servers
    for name, memory in result["memory_mb"].items():
        assert memory["flood_peak"] >= memory["after_flood"] > 0, name
        assert memory["before_flood"] > 0 and memory["lifetime_peak"] >= memory["flood_peak"]
    assert result["flooder_cores_busy"] > 0
    assert len(result["load_average"]["flood"]) == 3
