"""Fitted heads (the dicts ``cropssl-evaluate`` saves in ``heads/``): their file format and applying one.

:func:`save_head` / :func:`load_head` read and write the files; :func:`head_proba` serves
``cropssl-predict`` (maps) and the evaluation's robustness checks. A head is a probe (``classifier`` on
embeddings), a fine-tuned linear layer (``linear`` on the fine-tuned encoder's embeddings, with its
BatchNorm statistics), a constant class, or CatBoost on hand-crafted features.
"""

from __future__ import annotations

import json
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


HEAD_VERSION = 2  # 1: joblib pickle; 2: safetensors arrays + JSON (cannot run code when loaded)

HEAD_SUFFIX = ".safetensors"

_META_KEY = "cropssl_head"


# ---------------------------------------------------------------------------------------------- classifiers
class ArrayClassifier:
    """A fitted scikit-learn probe as plain arrays: imputation, standardisation, then logreg or kNN.

    Reproduces ``Pipeline(SimpleImputer, [StandardScaler], LogisticRegression | KNeighborsClassifier)
    .predict_proba`` (kNN: cosine distance, ``uniform`` or ``distance`` weights) from the arrays alone,
    so that a head file holds numbers, never code.

    Args:
        kind: ``logreg`` or ``knn``.
        arrays: ``classes``; ``impute`` (per-feature fill values) and ``mean``/``scale`` when the
            pipeline has them; ``coef``/``intercept`` (logreg) or ``fit_X``/``fit_y`` (kNN).
        params: ``k`` and ``weights`` for kNN.

    """

    def __init__(self, kind: str, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> None:
        if kind not in ("logreg", "knn"):
            raise ValueError(f"unknown array classifier {kind!r}")
        self.kind, self.arrays, self.params = kind, dict(arrays), dict(params)
        self.classes_ = np.asarray(self.arrays["classes"])

    @classmethod
    def from_sklearn(cls, pipeline: Any) -> ArrayClassifier:
        """Read the arrays of a fitted probe pipeline (:func:`cropssl.evaluation.probes.make_probe`)."""
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.preprocessing import StandardScaler

        arrays: dict[str, np.ndarray] = {}
        for _, step in pipeline.steps[:-1]:
            if isinstance(step, SimpleImputer):
                arrays["impute"] = np.asarray(step.statistics_, dtype=np.float64)
            elif isinstance(step, StandardScaler):
                arrays["mean"] = np.asarray(step.mean_, dtype=np.float64)
                arrays["scale"] = np.asarray(step.scale_, dtype=np.float64)
            else:
                raise TypeError(f"cannot store a {type(step).__name__} step in a head")
        last = pipeline.steps[-1][1]
        arrays["classes"] = np.asarray(last.classes_, dtype=np.int64)
        if isinstance(last, LogisticRegression):
            arrays["coef"] = np.asarray(last.coef_, dtype=np.float64)
            arrays["intercept"] = np.asarray(last.intercept_, dtype=np.float64)
            return cls("logreg", arrays, {})
        if isinstance(last, KNeighborsClassifier):
            if last.metric != "cosine" or last.weights not in ("uniform", "distance"):
                raise TypeError("heads store kNN with metric='cosine' and uniform / distance weights")
            # the fitted neighbours: scikit-learn keeps them as _fit_X / _y (no public accessor)
            arrays["fit_X"] = np.asarray(last._fit_X, dtype=np.float64)
            arrays["fit_y"] = np.asarray(last._y, dtype=np.int64)  # indices into classes_
            return cls("knn", arrays, {"k": int(last.n_neighbors), "weights": str(last.weights)})
        raise TypeError(f"cannot store a {type(last).__name__} in a head")

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if "impute" in self.arrays:
            X = np.where(np.isnan(X), self.arrays["impute"], X)
        if "mean" in self.arrays:
            X = (X - self.arrays["mean"]) / self.arrays["scale"]
        return X

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``[n, len(classes_)]`` class probabilities."""
        X = self._prepare(X)
        if self.kind == "logreg":
            z = X @ self.arrays["coef"].T + self.arrays["intercept"]
            if z.shape[1] == 1:  # binary: one decision function for classes_[1]
                p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
                return np.stack([1.0 - p1, p1], axis=1)
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        return self._knn_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable class of each row."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def _knn_proba(self, X: np.ndarray) -> np.ndarray:
        ref, y = self.arrays["fit_X"], self.arrays["fit_y"]
        k = min(int(self.params["k"]), len(ref))

        def unit(a: np.ndarray) -> np.ndarray:
            n = np.linalg.norm(a, axis=1, keepdims=True)
            return a / np.where(n == 0, 1.0, n)

        dist = np.clip(1.0 - unit(X) @ unit(ref).T, 0.0, None)  # cosine distance
        idx = np.argsort(dist, axis=1, kind="stable")[:, :k]
        d = np.take_along_axis(dist, idx, axis=1)
        if self.params["weights"] == "distance":
            with np.errstate(divide="ignore"):
                w = 1.0 / d
            exact = d == 0
            w = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), w)
        else:
            w = np.ones_like(d)
        proba = np.zeros((len(X), len(self.classes_)))
        np.add.at(proba, (np.repeat(np.arange(len(X)), k), y[idx].ravel()), w.ravel())
        return proba / proba.sum(axis=1, keepdims=True)


def _catboost_bytes(model: Any) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "model.cbm"
        model.save_model(str(f), format="cbm")
        return f.read_bytes()


def _catboost_from_bytes(blob: bytes) -> Any:
    from catboost import CatBoostClassifier

    model = CatBoostClassifier()
    model.load_model(blob=blob)
    return model


# ---------------------------------------------------------------------------------------------- files
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "encoder"


def head_filename(encoder: str | None, strategy: str) -> str:
    """``<encoder>__<strategy>.safetensors`` (``<strategy>.safetensors`` without an encoder)."""
    stem = strategy if encoder is None else f"{_safe(encoder)}__{strategy}"
    return stem + HEAD_SUFFIX


def save_head(path: str | Path, head: Mapping[str, Any]) -> Path:
    """Write a fitted head for ``cropssl-predict``: arrays in safetensors, the rest as JSON metadata.

    A head is a dict with ``strategy`` (``logreg``, ``knn``, ``catboost``, ``finetune`` or
    ``catboost_features``), ``classes``, ``legend`` (the label encoder's
    :meth:`~cropssl.evaluation.labels.LabelEncoder.to_dict`), ``timesteps``, ``bands`` and

    * ``classifier``: the fitted probe pipeline (stored as :class:`ArrayClassifier` arrays) or CatBoost
      model (stored in CatBoost's own ``cbm`` format), or None (a single training class:
      ``constant_class``);
    * ``encoder``: description of the encoder it was fitted on (spec, kind, fingerprint, config), None
      for ``catboost_features``;
    * ``encoder_state``: the encoder weights (numpy) when they cannot be found from the spec (fine-tuned
      or random encoders);
    * ``linear``: for ``finetune``, ``weight``/``bias`` of the linear layer and ``norm_mean``/``norm_var``
      of its input standardisation (None without it);
    * ``metrics``: the test metrics of the evaluation run.

    The file holds numbers and JSON only: loading a head cannot run code (older cropssl wrote joblib
    pickles; :func:`load_head` reads those only with ``trust_pickle=True``).
    """
    from safetensors.numpy import save_file

    from cropssl.artifacts import jsonable
    from cropssl.io.atomic import atomic_path

    meta = {k: v for k, v in head.items() if k not in ("classifier", "encoder_state", "linear")}
    tensors: dict[str, np.ndarray] = {}
    clf = head.get("classifier")
    if clf is None:
        meta["classifier"] = None
    elif type(clf).__module__.startswith("catboost"):
        meta["classifier"] = {"kind": "catboost"}
        tensors["classifier.cbm"] = np.frombuffer(_catboost_bytes(clf), dtype=np.uint8)
    else:
        arr = clf if isinstance(clf, ArrayClassifier) else ArrayClassifier.from_sklearn(clf)
        meta["classifier"] = {"kind": arr.kind, "params": arr.params}
        tensors.update({f"classifier.{k}": v for k, v in arr.arrays.items()})
    for group in ("encoder_state", "linear"):
        values = head.get(group)
        meta[group] = None if values is None else {k: v is not None for k, v in values.items()}
        for k, v in (values or {}).items():
            if v is not None:
                tensors[f"{group}.{k}"] = np.asarray(v)
    meta.update(format=HEAD_FORMAT, version=HEAD_VERSION)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp:
        tensors = {k: np.asarray(v, order="C") for k, v in tensors.items()}  # safetensors ignores strides
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(jsonable(meta))})
    return p


def load_head(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """Read a head written by :func:`save_head` (the inverse: the same dict, classifier rebuilt).

    Args:
        path: The head file.
        trust_pickle: Also read the joblib pickles older cropssl versions wrote. A pickle can run any
            code when loaded: only for heads you produced yourself.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a cropssl head, or is a pickle and ``trust_pickle`` is False.

    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"head {p} does not exist (heads are written by cropssl-evaluate save_heads=true)"
        )
    with open(p, "rb") as f:
        start = f.read(9)
    if start[8:9] != b"{":  # a safetensors file: 8-byte header length, then the JSON header
        return _load_pickle_head(p, trust_pickle)
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        with safe_open(str(p), framework="np") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{p} is not a readable cropssl head ({type(exc).__name__}: {exc})") from exc
    head = json.loads(raw) if raw else None
    if not isinstance(head, dict) or head.get("format") != HEAD_FORMAT:
        raise ValueError(f"{p} is not a cropssl head (no format={HEAD_FORMAT!r})")
    if int(head.get("version", 0)) > HEAD_VERSION:
        raise ValueError(
            f"{p} has head format version {head['version']}; this cropssl reads <= {HEAD_VERSION}"
        )

    def group(name: str) -> dict[str, np.ndarray]:
        pre = name + "."
        return {k[len(pre) :]: v for k, v in tensors.items() if k.startswith(pre)}

    clf = head.get("classifier")
    if clf is not None:
        arrays = group("classifier")
        if clf["kind"] == "catboost":
            head["classifier"] = _catboost_from_bytes(arrays["cbm"].tobytes())
        else:
            head["classifier"] = ArrayClassifier(clf["kind"], arrays, clf.get("params") or {})
    for name in ("encoder_state", "linear"):
        if head.get(name) is not None:
            values = group(name)
            head[name] = {k: values.get(k) for k in head[name]}
    return head


def _load_pickle_head(p: Path, trust_pickle: bool) -> dict[str, Any]:
    if not trust_pickle:
        if p.suffix not in (".joblib", ".pkl", ".pickle"):
            raise ValueError(f"{p} is not a cropssl head (neither safetensors nor an older joblib head)")
        raise ValueError(
            f"{p} is a pickled head (written by an earlier cropssl): loading a pickle can run any code. "
            "If you produced it yourself, pass --trust-pickle (trust_pickle=True); otherwise re-run "
            "cropssl-evaluate save_heads=true, which writes safetensors heads"
        )
    import joblib

    try:
        head = joblib.load(p)
    except Exception as exc:
        raise ValueError(f"{p} is not a readable cropssl head ({type(exc).__name__}: {exc})") from exc
    if not isinstance(head, dict) or head.get("format") != HEAD_FORMAT:
        raise ValueError(f"{p} is not a cropssl head (no format={HEAD_FORMAT!r})")
    return head


def state_numpy(module: Any) -> dict[str, np.ndarray]:
    """A module's state dict as numpy copies (the weights a head file carries)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
