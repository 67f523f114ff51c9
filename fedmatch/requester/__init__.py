"""The requesting authority's side: keys, encrypted lookup, match decisions, resolve.

- :mod:`~fedmatch.requester.client`: :class:`Requester`, the coordinator's client (register
  keys, encrypted lookup, decrypt the match bits, resolve verified hits, confirm a case);
- :mod:`~fedmatch.requester.keyfile`: the requester's key file (secret key, mode 0600);
- :mod:`~fedmatch.requester.rights`: a data subject's "which states hold my data?";
- :mod:`~fedmatch.requester.report`: JSON summaries of a lookup and its resolution;
- :mod:`~fedmatch.requester.enrolment`: a state's authority enrolling records at its own
  node;
- :mod:`~fedmatch.requester.candidates`: the candidate hits file between lookup and resolve,
  and :mod:`~fedmatch.requester.packets`: the candidates' verification packets on disk.

Imports the library (``he``, ``grpcutil``, ``pki``, ``audit``, ``protocol``, and
``biometrics`` when it needs faces); imported by ``cli``, ``demo`` and ``bench``, never by a
node, the coordinator or another library room.
"""

from fedmatch.requester.client import (
    LookupReport,
    NodeSummary,
    PacketFetch,
    Requester,
    ResolveReport,
)

__all__ = ["LookupReport", "NodeSummary", "PacketFetch", "Requester", "ResolveReport"]
