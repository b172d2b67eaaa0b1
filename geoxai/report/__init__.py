"""geoxai.report."""
