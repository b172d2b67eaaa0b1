"""geoxai.segmentation."""
