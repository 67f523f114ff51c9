"""The coordinator service of fedmatch."""
