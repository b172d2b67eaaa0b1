"""geoxai.data."""
