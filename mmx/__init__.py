"""mmx: archive-scale indexing of movie trailers (shots, experts, gated genre model, FAISS)."""

__version__ = "0.1.0"
