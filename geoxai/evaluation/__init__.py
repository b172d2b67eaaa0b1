"""geoxai.evaluation."""
