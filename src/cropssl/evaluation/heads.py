"""Fitted heads (the dicts ``cropssl-evaluate`` saves in ``heads/``): their file format and applying one.

:func:`save_head` / :func:`load_head` read and write the files; :func:`head_proba` serves
``cropssl-predict`` (maps) and the evaluation's robustness checks. A head is a probe (``classifier`` on
embeddings), a fine-tuned linear layer (``linear`` on the fine-tuned encoder's embeddings, with its
BatchNorm statistics), a constant class, or CatBoost on hand-crafted features.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
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


HEAD_FORMAT = "cropssl-head"


HEAD_VERSION = 1


# ---------------------------------------------------------------------------------------------- heads
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "encoder"


def save_head(path: str | Path, head: Mapping[str, Any]) -> Path:
    """Write a fitted head (joblib) for ``cropssl-predict``.

    A head is a dict with ``format="cropssl-head"``, ``version``, ``strategy`` (``logreg``, ``knn``,
    ``catboost``, ``finetune`` or ``catboost_features``), ``classes``, ``legend`` (the label encoder's
    :meth:`~cropssl.evaluation.labels.LabelEncoder.to_dict`), ``timesteps``, ``bands`` and

    * ``classifier``: the fitted scikit-learn pipeline / CatBoost model (probes, ``catboost_features``)
      or None (a single training class: ``constant_class``);
    * ``encoder``: description of the encoder it was fitted on (spec, kind, fingerprint, config), None
      for ``catboost_features``;
    * ``encoder_state``: the encoder weights (numpy) when they cannot be found from the spec (fine-tuned
      or random encoders);
    * ``linear``: for ``finetune``, ``weight``/``bias`` of the linear layer and ``norm_mean``/``norm_var``
      of its input standardisation (None without it);
    * ``metrics``: the test metrics of the evaluation run.

    Heads are pickles: load only heads you produced (as with any joblib / pickle file).
    """
    import joblib

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"format": HEAD_FORMAT, "version": HEAD_VERSION, **head}, p)
    return p


def load_head(path: str | Path) -> dict[str, Any]:
    """Read a head written by :func:`save_head`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a cropssl head.

    """
    import joblib

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"head {p} does not exist (heads are written by cropssl-evaluate save_heads=true)"
        )
    try:
        head = joblib.load(p)
    except Exception as exc:
        raise ValueError(f"{p} is not a readable cropssl head ({type(exc).__name__}: {exc})") from exc
    if not isinstance(head, dict) or head.get("format") != HEAD_FORMAT:
        raise ValueError(f"{p} is not a cropssl head (no format={HEAD_FORMAT!r})")
    if int(head.get("version", 0)) > HEAD_VERSION:
        raise ValueError(
            f"{p} has head format version {head['version']}; this cropssl reads <= {HEAD_VERSION}"
        )
    return head


def _state_numpy(module: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
