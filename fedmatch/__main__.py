"""``python -m fedmatch`` runs the ``fedmatch`` command."""

from fedmatch.cli.main import main

# Guarded: the search workers' parent process is started with "spawn", which imports the
# main module again.
if __name__ == "__main__":
    raise SystemExit(main())
