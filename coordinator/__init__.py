"""The coordinator: authorizes and fans out each query and applies the Dublin rules,
never holding biometrics, scores or secret keys.

- :mod:`~coordinator.service` (the plain-Python service) and :mod:`~coordinator.servicer`
  (its thin gRPC edge); :mod:`~coordinator.fanout` (calls to every node, outcomes kept
  apart) and :mod:`~coordinator.witnessing` (nodes cosign its log before they work);
- hits and decisions: :mod:`~coordinator.packets` (verification packets relayed unread,
  and the images every verdict must name), :mod:`~coordinator.verification` (verifiers'
  verdicts on hits),
  :mod:`~coordinator.dublin` (the hit rule), :mod:`~coordinator.case` (the criteria order
  and the case proposal), :mod:`~coordinator.casework` and :mod:`~coordinator.casestore`
  (proposals, confirmations and their retention);
- :mod:`~coordinator.relay`: notices between nodes; :mod:`~coordinator.config`.

Imports the ``fedmatch`` library except ``biometrics`` (and never its ``cli``, ``ops``,
``demo`` or ``bench``) and never a node; imported by ``fedmatch.cli`` (``fedmatch
coordinator ...``), ``ops``, ``demo`` and ``bench``.
"""
