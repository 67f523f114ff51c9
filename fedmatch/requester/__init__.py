"""The requesting authority's side: keys, encrypted lookup, match decisions, resolve."""

from fedmatch.requester.client import LookupReport, NodeSummary, Requester, ResolveReport

__all__ = ["LookupReport", "NodeSummary", "Requester", "ResolveReport"]
