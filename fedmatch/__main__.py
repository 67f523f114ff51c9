"""``python -m fedmatch`` runs the ``fedmatch`` command."""

from fedmatch.cli import main

raise SystemExit(main())
