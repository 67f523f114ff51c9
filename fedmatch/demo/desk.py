"""``fedmatch demo --desk``: the lookup's candidates handed to the verifier desk, in a browser.

Instead of signing the two experts' verdicts itself, the demo puts the lookup where a Dublin
unit's desk finds it (the candidates file, the probe's opening and the verification packets
in a cases folder), protects each expert's and the official's signing key with a passphrase
(``fedmatch desk protect-key``), writes ``desk.toml`` and serves the desk
(:mod:`fedmatch.desk`) on loopback until Ctrl-C. Two people log in as the experts, compare
the images and confirm or reject; the official then resolves and confirms the decision.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedmatch.demo.parties import relative_path, say
from fedmatch.domain import Sex
from fedmatch.pki.provision import PartyFiles
from fedmatch.requester.candidates import write_candidates
from fedmatch.requester.packets import PacketFolder, packets_path

__all__ = ["DeskCase", "serve_demo_desk"]


class DeskCase:
    """What the desk gets of one lookup: the report (candidates and opening), the probe
    photo and the fetched packets."""

    def __init__(self, report: Any, probe_image: bytes, fetched: Any, probe_sex: Sex) -> None:
        self.report = report
        self.probe_image = probe_image
        self.fetched = fetched
        self.probe_sex = probe_sex


def _toml(value: str) -> str:
    return json.dumps(value)


def _write_case(cases: Path, case: DeskCase) -> Path:
    cases.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = cases / f"{case.report.header.case_reference}.json"
    write_candidates(case.report, path)
    PacketFolder(packets_path(path)).write(
        case.report.header.query_id, case.probe_image, case.fetched.packets, case.probe_sex
    )
    return path


def _desk_toml(
    workdir: Path,
    cases: Path,
    experts: Sequence[PartyFiles],
    operator: PartyFiles,
    official: PartyFiles,
    coordinator: str,
    passphrase: str,
    unit: str,
) -> Path:
    from fedmatch.pki.keystore import protect_file

    keys = workdir / "desk-keys"
    keys.mkdir(mode=0o700, exist_ok=True)
    tables = []
    for party in experts:
        protected = keys / f"{party.name}.key.enc"
        protected.unlink(missing_ok=True)  # a demo run makes its passphrase afresh
        protect_file(party.signing_key, protected, passphrase)
        tables.append(
            f"[[verifier]]\nchain = {_toml(relative_path(party.tls.chain, workdir))}\n"
            f"key = {_toml(relative_path(protected, workdir))}\n"
        )
    # The official signs with the key of their own `officer` certificate; the operator
    # workstation's [tls] (operator-<STATE>.toml) only makes the channel.
    protected = keys / f"{official.name}.key.enc"
    protected.unlink(missing_ok=True)
    protect_file(official.signing_key, protected, passphrase)
    state = operator.name.rsplit("-", 1)[-1]
    path = workdir / "desk.toml"
    path.write_text(
        "# The verifier desk of the demo's requesting state: `fedmatch desk serve --config`.\n"
        f'[desk]\ncases = {_toml(relative_path(cases, workdir))}\nlisten = "127.0.0.1:0"\n'
        f"root = {_toml(relative_path(operator.tls.root, workdir))}\n"
        f"crls = [{', '.join(_toml(relative_path(c, workdir)) for c in operator.tls.crls)}]\n\n"
        + "\n".join(tables)
        + f"\n[officer]\nchain = {_toml(relative_path(official.tls.chain, workdir))}\n"
        f"unit = {_toml(unit)}\n"
        f"operator = {_toml(f'operator-{state}.toml')}\n"
        f"coordinator = {_toml(coordinator)}\n"
        f"key = {_toml(relative_path(protected, workdir))}\n"
    )
    return path


def serve_demo_desk(
    workdir: Path,
    case: DeskCase,
    experts: Sequence[PartyFiles],
    operator: PartyFiles,
    official: PartyFiles,
    coordinator: str,
    unit: str,
    until: Callable[[], None] | None = None,
) -> Path:
    """Hand ``case`` to a desk and serve it until Ctrl-C (or until ``until`` returns, for
    tests). Returns the candidates file, whose side files hold what the desk did."""
    from fedmatch.desk.app import create_app
    from fedmatch.desk.config import load_config
    from fedmatch.desk.server import running

    candidates = _write_case(workdir / "desk-cases", case)
    passphrase = "demo-" + secrets.token_hex(4)
    config_path = _desk_toml(
        workdir, workdir / "desk-cases", experts, operator, official, coordinator, passphrase, unit
    )
    config = load_config(config_path)
    with running(create_app(config), config) as url:
        people = ", ".join(e.name.split("-")[1] for e in experts)
        say(
            f"6. verifier desk: {url} (Ctrl-C stops it). Log in as {people} (the experts) "
            f"and as the official, passphrase {passphrase} (demo keys only, under "
            f"{relative_path(workdir / 'desk-keys', workdir)}); {len(case.fetched.packets)} "
            "candidates await two verdicts each"
        )
        try:
            if until is not None:
                until()
            else:
                _wait_for_interrupt()
        except KeyboardInterrupt:
            pass
    say("   desk stopped")
    return candidates


def _wait_for_interrupt() -> None:
    import threading

    # Timed waits: the KeyboardInterrupt is raised in the main thread between bytecodes,
    # and Ctrl-C may reach another thread of this process (the desk's, gRPC's); an untimed
    # wait is then never interrupted (a demo once ignored Ctrl-C for 120 s that way).
    never = threading.Event()
    while not never.wait(0.25):
        pass
