"""geoxai.embedders."""
