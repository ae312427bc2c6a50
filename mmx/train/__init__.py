"""Training: in-memory data and sharding, metrics, the plain-PyTorch loop (and its Ray adapter)."""
