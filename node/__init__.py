"""One member state's node: its record store, encrypted search service and gRPC server.

- the register: :mod:`~node.store` (SQLite), :mod:`~node.records`, :mod:`~node.sealing`
  (templates encrypted at rest), :mod:`~node.backup`, :mod:`~node.locks`;
- searching and answering: :mod:`~node.service` (the plain-Python service),
  :mod:`~node.servicer` (its thin gRPC edge), :mod:`~node.handles` (per-query result
  layouts, and the ledger of released packets), :mod:`~node.policy` (which purpose may see
  which category), :mod:`~node.packets` (a candidate's verification packet);
- the record lifecycle: :mod:`~node.retention`, :mod:`~node.lifecycle` and
  :mod:`~node.lifecycle_servicer` (marks, erasure), :mod:`~node.inbox` and
  :mod:`~node.notices` (notices between states);
- :mod:`~node.config`: the ``[node]`` table.

Imports the ``fedmatch`` library (never its ``cli``, ``ops``, ``demo`` or ``bench``) and
never the coordinator; imported by ``fedmatch.cli`` (``fedmatch node ...``), ``ops``,
``demo`` and ``bench``.
"""
