"""One flooder process of ``fedmatch bench flood``: ``python -m fedmatch.bench.flood_worker
SPEC.json``.

The spec (written by :mod:`fedmatch.bench.flood`) names the federation's addresses, its PKI
directory, the hostile state, the key files and three paths: the flooder writes ``ready``
once it holds its channels and keys, waits for ``go`` to appear, runs every attack of
:mod:`fedmatch.bench.attacks` side by side for ``duration_s`` seconds, and writes its tally
as JSON to ``result``. Every loop ends at the deadline, and every call has a deadline of its
own within it: the process stops by itself.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from fedmatch.bench import attacks
from fedmatch.bench.federation import bench_requester, provision_parties
from fedmatch.domain import Purpose
from fedmatch.pki.names import dns_name
from fedmatch.pki.provision import PartyFiles
from fedmatch.protocol.transport import Security
from fedmatch.requester.keyfile import load_keys
from fedmatch.rpc.v1 import common_pb2

__all__ = ["main"]

# How long the flooder waits for the benchmark's go, and past its deadline for its threads.
_GO_TIMEOUT_S = 900.0
_JOIN_GRACE_S = 150.0
# The hostile state's certificates that open streams (each one another kind of party).
_STREAM_PARTIES = ("operator", "verifier-anna", "node")


def _credentials(party: PartyFiles) -> grpc.ChannelCredentials:
    credentials = Security(party.tls).channel_credentials()
    assert credentials is not None  # Security without --dev-insecure
    return credentials


def _target(spec: dict[str, Any]) -> attacks.Target:
    hostile = spec["hostile"]
    parties = provision_parties(Path(spec["pki"]), spec["states"], spec["requesters"])
    requester = bench_requester(
        parties, hostile, spec["coordinator"], load_keys(Path(spec["lookup_keys"]))
    )
    bundles = [common_pb2.HEKeyBundle.FromString(Path(p).read_bytes()) for p in spec["bundles"]]
    return attacks.Target(
        coordinator=spec["coordinator"],
        nodes=spec["nodes"],
        coordinator_name=dns_name("coordinator", "eu"),
        node_names={s: dns_name("node", s) for s in spec["nodes"]},
        root_pem=parties[f"operator-{hostile}"].tls.root.read_bytes(),
        credentials=[_credentials(parties[f"{p}-{hostile}"]) for p in _STREAM_PARTIES],
        requester=requester,
        bundles=bundles,
        dimension=spec["dimension"],
        until=float("inf"),
    )


def run(spec: dict[str, Any]) -> dict[str, Any]:
    target = _target(spec)
    tallies = {name: attacks.Tally() for name in attacks.ATTACKS}
    answered: Counter[str] = Counter()
    # Flooders start at different mixes: what one registers is new to the other.
    bundles = attacks.key_bundles(target.bundles, start=spec["index"] * 7)
    work: list[tuple[str, Any, tuple[Any, ...]]] = [
        ("watch_streams", attacks.watch_streams, ()),
        ("oversize", attacks.oversize, ()),
        ("malformed", attacks.malformed, ()),
        ("no_client_cert", attacks.no_client_cert, ()),
        ("plaintext", attacks.plaintext, ()),
        *[("key_registrations", attacks.key_registrations, (bundles,))]
        * spec["registration_threads"],
        *[
            ("lookups", attacks.lookups, (answered, spec["index"] * 1000 + i))
            for i in range(spec["lookup_threads"])
        ],
    ]
    # Its lookup keys registered before the flood (every thread's first lookup would
    # otherwise send them at once): a repeat by the second flooder costs no quota.
    target.requester.register_keys(
        target.requester.header(Purpose.ASYLUM_DUBLIN, "flood", "FLOOD-KEYS"), timeout=900.0
    )
    Path(spec["ready"]).write_text("ready")
    deadline = time.monotonic() + _GO_TIMEOUT_S
    while not Path(spec["go"]).exists():
        if time.monotonic() > deadline:
            raise SystemExit("flood_worker: no go from the benchmark")
        time.sleep(0.02)
    cpu0, wall0 = time.process_time(), time.time()
    target.until = time.monotonic() + float(spec["duration_s"])
    threads = [
        threading.Thread(target=fn, args=(target, tallies[name], *args), daemon=True)
        for name, fn, args in work
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, target.until + _JOIN_GRACE_S - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    out = {
        "index": spec["index"],
        "started_unix": wall0,
        "ended_unix": time.time(),
        "cpu_s": round(time.process_time() - cpu0, 2),
        "threads_stuck": stuck,
        "attacks": {name: tally.as_dict() for name, tally in tallies.items()},
        "lookup_node_outcomes": dict(answered),
    }
    target.close()
    target.requester.close()
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    # Before any thread exists, so that every thread of the flooder runs at this niceness.
    os.nice(int(spec.get("nice", 0)))
    result = run(spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
