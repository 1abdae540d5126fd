"""Applying a fitted head (the dict ``cropssl-evaluate`` saves in ``heads/``) to samples.

One function serves ``cropssl-predict`` (maps) and the evaluation's robustness checks: a head is a probe
(``classifier`` on embeddings), a fine-tuned linear layer (``linear`` on the fine-tuned encoder's
embeddings, with its BatchNorm statistics), a constant class, or CatBoost on hand-crafted features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cropssl.schema import PixelSamples


def head_proba(head: dict[str, Any], encoder: Any | None, chunk: PixelSamples) -> np.ndarray:
    """``[n, K]`` probabilities of a chunk of samples under a head."""
    import torch

    k = len(head["classes"])
    if head["strategy"] == "catboost_features":
        from cropssl.evaluation.features import compute_features

        X = compute_features(chunk)[0].astype(np.float64)
    else:
        from cropssl.evaluation.encoders import embed_samples

        X = embed_samples(encoder, chunk, batch_size=len(chunk) or 1).astype(np.float64)
    if head.get("linear") is not None:
        lin = head["linear"]
        z = torch.from_numpy(X).float()
        if lin.get("norm_mean") is not None:
            mean = torch.from_numpy(np.asarray(lin["norm_mean"])).float()
            var = torch.from_numpy(np.asarray(lin["norm_var"])).float()
            z = (z - mean) / torch.sqrt(var + float(lin.get("norm_eps", 1e-5)))
        logits = z @ torch.from_numpy(np.asarray(lin["weight"])).float().T
        logits = logits + torch.from_numpy(np.asarray(lin["bias"])).float()
        return torch.softmax(logits.double(), dim=1).numpy()
    proba = np.zeros((len(X), k))
    clf = head.get("classifier")
    if clf is None:
        proba[:, int(head["constant_class"])] = 1.0
        return proba
    classes = np.asarray(clf.classes_, dtype=np.int64).reshape(-1)
    proba[:, classes] = clf.predict_proba(X)
    return proba
