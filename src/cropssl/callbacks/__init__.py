"""Lightning callbacks of cropssl: online health monitors (collapse, kNN / linear probes)."""

from cropssl.callbacks.monitors import (
    EmbeddingHealth,
    EncoderMonitor,
    ProbeMonitor,
    embedding_std,
    knn_majority_vote,
    rankme,
)

__all__ = [
    "EmbeddingHealth",
    "EncoderMonitor",
    "ProbeMonitor",
    "embedding_std",
    "knn_majority_vote",
    "rankme",
]
