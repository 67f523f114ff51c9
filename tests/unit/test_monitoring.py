"""The monitoring kit of deploy/monitoring/ (Prometheus alert rules, a Grafana dashboard)
refers only to metrics the parties export, and the party metrics added for it: build
information, process metrics, and the seconds until the party's own certificate expires."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from fedmatch import __version__
from fedmatch.audit.note import NoteSigner
from fedmatch.ops.party_info import register_party_info
from fedmatch.pki import create_intermediate, create_root, issue

ROOT = Path(__file__).parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
ALERTS = MONITORING / "fedmatch-alerts.yaml"
DASHBOARD = MONITORING / "fedmatch-dashboard.json"
# A metric name in a PromQL expression: ours, gRPC's server metrics, process and Python
# runtime metrics (label names such as grpc_method or member_state do not match).
_METRIC = re.compile(r"\b((?:fedmatch|grpc_server|process|python)_[a-z0-9_]+)\b")
# A declaration in the source: the name, then its help text as the next argument.
_DECLARED = re.compile(r"""\(\s*"((?:fedmatch|grpc_server)_[a-z0-9_]+)",\s*"[A-Z]""")
_SUFFIXES = ("_total", "_created", "_bucket", "_sum", "_count")


def _exported_families() -> set[str]:
    names: set[str] = set()
    for folder in ("fedmatch", "node", "coordinator"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(_DECLARED.findall(path.read_text()))
    # Process and platform metrics, as a party's registry has them.
    registry = CollectorRegistry()
    register_party_info(registry, None)
    names |= {family.name for family in registry.collect()}
    return names


def _exists(name: str, families: set[str]) -> bool:
    if name in families:
        return True
    return any(name.endswith(s) and name.removesuffix(s) in families for s in _SUFFIXES)


def _alert_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel.get("targets", [])]
    for variable in doc.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            exprs.append(query if isinstance(query, str) else query["query"])
    return exprs


def test_alert_rules_reference_only_exported_metrics() -> None:
    families = _exported_families()
    rules = _alert_rules()
    assert len(rules) >= 8
    used = set()
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule  # type: ignore[index]
        assert "summary" in rule["annotations"], rule  # type: ignore[operator]
        names = _METRIC.findall(str(rule["expr"]))
        # Prometheus's own `up` is the only other series an alert may use.
        assert names or re.match(r"up\{", str(rule["expr"])), rule["alert"]
        used |= set(names)
    unknown = sorted(n for n in used if not _exists(n, families))
    assert not unknown, unknown
    # The alerts the issue asks for.
    alerts = {str(rule["alert"]) for rule in rules}
    assert {"FedmatchCertificateExpiresSoon", "FedmatchPartyDown",
            "FedmatchCheckpointStale", "FedmatchNodeNotAnswering",
            "FedmatchNodeCheckFailing", "FedmatchRegisterNotReconciled",
            "FedmatchQuotaNearlyUsed", "FedmatchQuotaRefusals"} <= alerts  # fmt: skip


def test_dashboard_references_only_exported_metrics() -> None:
    families = _exported_families()
    doc = json.loads(DASHBOARD.read_text())
    assert doc["title"] and doc["uid"] and doc["panels"]
    exprs = _dashboard_exprs()
    assert len(exprs) >= 10
    used = {n for e in exprs for n in _METRIC.findall(e)}
    unknown = sorted(n for n in used if not _exists(n, families))
    assert not unknown, unknown
    # The metrics of the node, the coordinator and every party each have a panel.
    shown = {n.removesuffix(s) for n in used for s in ("", *_SUFFIXES) if n.endswith(s)}
    core = {"fedmatch_party_info", "fedmatch_build_info", "fedmatch_register_records",
            "fedmatch_audit_log_entries", "fedmatch_audit_log_bytes",
            "fedmatch_audit_checkpoint_entries", "fedmatch_audit_checkpoint_age_seconds",
            "fedmatch_key_epochs_live", "fedmatch_search_workers", "fedmatch_fanout_calls",
            "fedmatch_fanout_node_seconds", "fedmatch_federation_nodes",
            "fedmatch_federation_nodes_unhealthy", "grpc_server_started",
            "grpc_server_handled", "grpc_server_handling_seconds", "fedmatch_rpc_refusals",
            "fedmatch_rpc_in_flight", "fedmatch_tls_certificate_expiry_seconds",
            "fedmatch_register_unreconciled_records", "fedmatch_quota_used_today",
            "fedmatch_quota_daily_limit", "fedmatch_quota_charged",
            "fedmatch_quota_refused"}  # fmt: skip
    assert not sorted(core - shown), sorted(core - shown)


def test_exported_metric_names_are_found() -> None:
    """The declaration pattern finds the metrics the tests above check against."""
    families = _exported_families()
    assert {"fedmatch_register_records", "grpc_server_handled", "fedmatch_fanout_calls",
            "fedmatch_build_info", "fedmatch_tls_certificate_expiry_seconds",
            "process_resident_memory_bytes"} <= families  # fmt: skip


@pytest.fixture(scope="module")
def node_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pki")
    create_root(base / "ca")
    create_intermediate(base / "ca", "IT", base / "ca")
    signer = NoteSigner.generate("fedmatch/node/IT")
    return issue(base / "ca", "node", "IT", "", signer, base / "tls", days=30).chain


def _samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_build_info_and_certificate_expiry(node_chain: Path) -> None:
    registry = CollectorRegistry(auto_describe=True)
    register_party_info(registry, node_chain)
    samples = _samples(registry)
    [(labels, value)] = samples["fedmatch_build_info"]
    assert value == 1 and labels["version"] == __version__ and labels["python"]
    [(_, seconds)] = samples["fedmatch_tls_certificate_expiry_seconds"]
    expected = (datetime.now(UTC) + timedelta(days=30) - datetime.now(UTC)).total_seconds()
    assert expected - 120 < seconds <= expected
    assert "process_resident_memory_bytes" in samples
    assert b"fedmatch_tls_certificate_expiry_seconds" in generate_latest(registry)


def test_certificate_expiry_follows_a_replaced_certificate(
    node_chain: Path, tmp_path: Path
) -> None:
    """Read at every scrape: a renewed certificate (reloaded by the server) shows at once."""
    chain = tmp_path / "cert.pem"
    chain.write_bytes(node_chain.read_bytes())
    registry = CollectorRegistry()
    register_party_info(registry, chain)
    before = _samples(registry)["fedmatch_tls_certificate_expiry_seconds"][0][1]
    ca = node_chain.parents[1] / "ca"
    signer = NoteSigner.generate("fedmatch/node/IT")
    renewed = issue(ca, "node", "IT", "", signer, tmp_path / "new", days=90).chain
    chain.write_bytes(renewed.read_bytes())
    after = _samples(registry)["fedmatch_tls_certificate_expiry_seconds"][0][1]
    assert after - before > 59 * 86400


def test_unreadable_certificate_leaves_the_gauge_out(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    register_party_info(registry, tmp_path / "missing.pem")
    samples = _samples(registry)
    assert "fedmatch_tls_certificate_expiry_seconds" not in samples
    assert "fedmatch_build_info" in samples


def test_node_and_coordinator_serve_register_party_info() -> None:
    for module in ("node", "coordinator"):
        text = (ROOT / "fedmatch" / "cli" / f"{module}.py").read_text()
        assert "register_party_info(metrics.registry, security.files.chain)" in text, module
