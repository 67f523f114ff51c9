"""What parties exchange and check: the wire contract around the generated stubs.

- :mod:`~fedmatch.protocol.statement`: the signed request statement (who, why, legal basis,
  case, probe hash, nonce, time) and its verification;
- :mod:`~fedmatch.protocol.verification`: verifiers' signed hit verdicts (binding the images
  compared) and what they add up to;
- :mod:`~fedmatch.protocol.opening`: the probe commitment, its sealed opening, and the key
  of the node's encrypted reply; :mod:`~fedmatch.protocol.packet`: a candidate's
  verification packet (face crop and non-identifying metadata), sealed to the requester;
- :mod:`~fedmatch.protocol.wire`: protobuf <-> domain dataclasses, at the edge only;
- :mod:`~fedmatch.protocol.transport`: a party's ``[tls]`` table, mTLS credentials and chain
  checks;
- :mod:`~fedmatch.protocol.gate`, :mod:`~fedmatch.protocol.replay`: what a party checks of
  every signed request, and the nonce store that refuses replays;
- :mod:`~fedmatch.protocol.epochs`: requester key epochs a node or coordinator keeps live;
- :mod:`~fedmatch.protocol.canonical`: the one canonical JSON every signature and digest
  covers;
- :mod:`~fedmatch.protocol.casefile`: the Dublin case inputs a requesting authority supplies;
- :mod:`~fedmatch.protocol.limits`: the size bounds of every message.

Imports only the shared top-level modules and the library rooms ``he``, ``grpcutil``,
``pki`` and ``audit`` (which use it in turn: signed-note keys, canonical JSON); imported by
the roles (``node``, ``coordinator``, ``requester``) and everything above them, never the
other way round.
"""
