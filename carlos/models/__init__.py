"""Model wrappers (CLIP embedders, diffusion pipelines); torch is imported lazily inside them."""
