"""The `fedmatch` command (placeholder until the split)."""
