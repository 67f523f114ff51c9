"""The ``fedmatch`` command: one module per command group.

- :mod:`~fedmatch.cli.main`: the parser (global options, then each group's own parsers) and
  the dispatch; the only place that turns errors into exit codes;
- :mod:`~fedmatch.cli.common`: exit codes, the shared arguments, logging set-up, the operator
  workstation's file, the checks of a party's own certificate;
- the command groups: :mod:`~fedmatch.cli.node` (with :mod:`~fedmatch.cli.node_storage` and
  :mod:`~fedmatch.cli.node_lifecycle`), :mod:`~fedmatch.cli.coordinator`,
  :mod:`~fedmatch.cli.keys`, :mod:`~fedmatch.cli.enroll`, :mod:`~fedmatch.cli.lookup`,
  :mod:`~fedmatch.cli.case` (``confirm-decision``), :mod:`~fedmatch.cli.verify`
  (``verify-hit``, ``resolve``), :mod:`~fedmatch.cli.desk` (``desk protect-key|serve``),
  :mod:`~fedmatch.cli.rights`, :mod:`~fedmatch.cli.demo`,
  :mod:`~fedmatch.cli.evaluate`, :mod:`~fedmatch.cli.audit`, :mod:`~fedmatch.cli.bench`,
  :mod:`~fedmatch.cli.pki`, :mod:`~fedmatch.cli.health` (and the ``status`` actions),
  :mod:`~fedmatch.cli.config_check` (``config check``);
- the files commands read and write: :mod:`~fedmatch.cli.templates` (template files),
  :mod:`~fedmatch.requester.candidates` (the candidate hits between lookup and resolve).

Each group module adds its parsers in ``add_parsers(sub)`` and names its runner with
``set_defaults(run=...)``; its heavy imports stay inside the runner, so that ``fedmatch
--help`` loads no HE, face or Ray runtime. May import every room of the project; nothing
imports it but ``python -m fedmatch`` and the ``fedmatch`` console script
(``fedmatch.cli.main:main``), and nothing in it imports :mod:`~fedmatch.cli.main` back.
"""
