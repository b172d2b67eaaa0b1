"""geoxai.ldm."""
