"""Embedding: backbones and their plug-ins, inference and batching, the region embedder, the token map, the text channel."""
