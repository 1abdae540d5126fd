"""Online health monitors of the encoder during pre-training, as optional Lightning callbacks.

Every ``every_n_steps`` optimiser steps (and at the start and end of training), on rank 0 only, the
monitors embed a fixed set of pixels with ``pl_module.encoder`` in eval mode under ``no_grad`` (the
previous train/eval mode is restored afterwards) and log:

* :class:`EmbeddingHealth` -- ``monitor/emb_std``, the mean per-dimension standard deviation of the
  L2-normalised embeddings (about ``1/sqrt(D)`` for healthy spread-out embeddings, 0 under collapse), and
  ``monitor/rankme``, the RankMe effective rank (Garrido et al. 2023, "RankMe: Assessing the downstream
  performance of pretrained self-supervised representations by their rank"):
  ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / sum_j sigma_j + eps`` over the singular values of
  the embedding matrix (between 1 and ``min(N, D)``).
* :class:`ProbeMonitor` -- ``monitor/knn_f1`` (cosine k-nearest-neighbour vote) and
  ``monitor/linear_f1`` (scikit-learn logistic regression on standardised embeddings), macro-F1 on a
  fixed stratified train/test split of a labelled shard set (classes = ``ewoc_code``).

A collapsing run (loss falling, every pixel mapped to the same point) shows as ``emb_std`` and
``rankme`` dropping towards 0 and 1, and the probe F1 dropping to what a constant feature can do.

Metrics go straight to ``trainer.loggers`` at the current global step (so they do not depend on
``log_every_n_steps``), into ``trainer.callback_metrics``, and into each monitor's ``history``.

Monitors are optional: if their shards are missing, unreadable or (for the probe) hold too few labels,
they warn once ("monitors configured without labelled data: ...; training continues without them") and
switch themselves off; the run goes on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from cropssl.schema import Batch, PixelSamples

log = logging.getLogger(__name__)

__all__ = [
    "EmbeddingHealth",
    "EncoderMonitor",
    "ProbeMonitor",
    "embedding_std",
    "knn_majority_vote",
    "rankme",
]

ShardSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


# ----------------------------------------------------------------------------------------------------------
# metrics (pure functions)
# ----------------------------------------------------------------------------------------------------------
def rankme(z: Tensor | np.ndarray, eps: float = 1e-7) -> float:
    """RankMe effective rank of an embedding matrix (Garrido et al. 2023).

    Args:
        z: ``[N, D]`` embeddings (used as they are: not centred, not normalised, as in the paper).
        eps: The paper's epsilon added to each normalised singular value.

    Returns:
        ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / sum(sigma) + eps``; 1 for a rank-1 matrix,
        ``min(N, D)`` for one with equal singular values, 1 for an all-zero matrix.

    """
    z = torch.as_tensor(z).detach().to("cpu", torch.float64)
    s = torch.linalg.svdvals(z)
    total = s.sum()
    if not torch.isfinite(total) or total <= 0:
        return 1.0
    p = s / total + eps
    return float(torch.exp(-(p * p.log()).sum()))


def embedding_std(z: Tensor | np.ndarray) -> float:
    """Mean over dimensions of the per-dimension std of the L2-normalised embeddings (0 = collapsed).

    Args:
        z: ``[N, D]`` embeddings.

    Returns:
        The mean standard deviation (population std over the N samples).

    """
    z = torch.as_tensor(z).detach().to("cpu", torch.float64)
    z = torch.nn.functional.normalize(z, dim=1)
    return float(z.std(dim=0, unbiased=False).mean())


def knn_majority_vote(
    train_z: Tensor, train_y: Tensor, test_z: Tensor, k: int = 20, chunk: int = 1024
) -> Tensor:
    """Cosine k-nearest-neighbour majority vote (ties go to the nearest neighbour's class).

    Args:
        train_z: ``[N, D]`` reference embeddings.
        train_y: ``[N]`` int class indices ``0..C-1``.
        test_z: ``[M, D]`` query embeddings.
        k: Neighbours (capped at N).
        chunk: Queries per block (bounds memory at ``chunk x N``).

    Returns:
        ``[M]`` predicted class indices.

    """
    train_z = torch.nn.functional.normalize(train_z.double(), dim=1)
    test_z = torch.nn.functional.normalize(test_z.double(), dim=1)
    k = min(k, len(train_z))
    n_cls = int(train_y.max()) + 1
    preds = []
    for start in range(0, len(test_z), chunk):
        sim = test_z[start : start + chunk] @ train_z.T
        idx = sim.topk(k, dim=1).indices  # sorted, nearest first
        votes = torch.zeros(len(idx), n_cls, dtype=torch.float64)
        votes.scatter_add_(1, train_y[idx], torch.ones_like(idx, dtype=torch.float64))
        # break ties by the nearest neighbour: a tiny bonus decreasing with the rank
        bonus = torch.zeros_like(votes).scatter_add_(
            1, train_y[idx], 1e-3 / (1.0 + torch.arange(k, dtype=torch.float64)).expand(len(idx), k)
        )
        preds.append((votes + bonus).argmax(1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


# ----------------------------------------------------------------------------------------------------------
# callbacks
# ----------------------------------------------------------------------------------------------------------
class EncoderMonitor(pl.Callback):
    """Base of the monitors: scheduling, rank-0 gating, eval-mode embedding, logging, disabling.

    Args:
        every_n_steps: Run every this many optimiser steps (global steps); 0 = only at start and end.
        max_samples: Largest number of pixels embedded.
        batch_size: Pixels per forward pass.
        log_on_start: Also run when training starts (the step-0 reference point).
        log_on_end: Also run when training ends (final values for comparison tables).

    Attributes:
        enabled: False once the monitor switched itself off (no usable data).
        history: One dict per evaluation: ``{"step": global_step, "monitor/...": value, ...}``.

    """

    def __init__(
        self,
        every_n_steps: int = 100,
        max_samples: int = 2048,
        batch_size: int = 512,
        log_on_start: bool = True,
        log_on_end: bool = True,
    ) -> None:
        super().__init__()
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        if max_samples < 2:
            raise ValueError(f"max_samples must be >= 2, got {max_samples}")
        self.every_n_steps = int(every_n_steps)
        self.max_samples = int(max_samples)
        self.batch_size = int(batch_size)
        self.log_on_start = bool(log_on_start)
        self.log_on_end = bool(log_on_end)
        self.enabled = True
        self.history: list[dict[str, float]] = []
        self._prepared = False
        self._last_step: int | None = None

    # ---- to implement ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the data (called once, on rank 0). Call :meth:`disable` when it is unusable."""
        raise NotImplementedError

    def compute(self, embed: Any) -> dict[str, float]:
        """Compute the metrics; ``embed(batch) -> [N, D]`` CPU float tensor of embeddings."""
        raise NotImplementedError

    # ---- helpers -----------------------------------------------------------------------------------
    def disable(self, reason: str) -> None:
        """Warn once and switch the monitor off; training continues."""
        self.enabled = False
        rank_zero_warn(f"{type(self).__name__}: {reason}; training continues without them")

    def _ensure_prepared(self) -> None:
        if not self._prepared:
            self._prepared = True
            try:
                self.prepare()
            except (OSError, ValueError, RuntimeError) as exc:  # missing / corrupt shards: warn, go on
                self.disable(f"monitors configured without labelled data: cannot read the shards ({exc})")

    @staticmethod
    def _embed_fn(encoder: nn.Module, device: torch.device, batch_size: int) -> Any:
        def embed(batch: Batch) -> Tensor:
            out = []
            for start in range(0, len(batch), batch_size):
                part = batch.select(slice(start, start + batch_size))
                out.append(encoder(part.to(device)).float().cpu())
            return torch.cat(out)

        return embed

    def evaluate(self, encoder: nn.Module, device: torch.device | str = "cpu") -> dict[str, float]:
        """The metrics of any encoder now (eval mode, no grad; its mode is restored), e.g. a baseline.

        Raises:
            RuntimeError: the monitor is disabled (no usable data).

        """
        self._ensure_prepared()
        if not self.enabled:
            raise RuntimeError(f"{type(self).__name__} is disabled (no usable data)")
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                return self.compute(self._embed_fn(encoder, torch.device(device), self.batch_size))
        finally:
            encoder.train(was_training)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float] | None:
        """Evaluate now (rank 0 only) and log; returns the metrics, or None when skipped / disabled."""
        if not self.enabled or not trainer.is_global_zero:
            return None
        self._ensure_prepared()
        if not self.enabled:
            return None
        step = int(trainer.global_step)
        if step == self._last_step:
            return None
        metrics = self.evaluate(pl_module.encoder, pl_module.device)
        self._last_step = step
        self.history.append({"step": step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        for k, v in metrics.items():
            trainer.callback_metrics[k] = torch.tensor(v)
        return metrics

    # ---- Lightning hooks ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Load the monitor data early on rank 0 so a misconfiguration is reported at once."""
        if stage == "fit" and trainer.is_global_zero and self.enabled:
            self._ensure_prepared()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Reference values before the first step."""
        if self.log_on_start:
            self.run(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Evaluate every ``every_n_steps`` optimiser steps."""
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.run(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Final values (skipped if the last step was just evaluated)."""
        if self.log_on_end:
            self.run(trainer, pl_module)


def _read(shards: ShardSpec) -> PixelSamples:
    from cropssl.data.shards import read_shards

    return read_shards(shards)


def _subset(samples: PixelSamples, n: int, seed: int) -> PixelSamples:
    """A fixed random subset of at most ``n`` samples (order kept)."""
    if len(samples) <= n:
        return samples
    idx = np.sort(np.random.default_rng(seed).choice(len(samples), n, replace=False))
    return samples.select(idx)


class EmbeddingHealth(EncoderMonitor):
    """Collapse monitor: ``monitor/emb_std`` and ``monitor/rankme`` of a fixed pixel set.

    Args:
        shards: Shard spec of the pixels to embed (labels are not needed), e.g. a held-out shard dir.
        every_n_steps: Evaluate every this many optimiser steps.
        max_samples: Pixels embedded (a fixed random subset of the shards).
        batch_size: Pixels per forward pass.
        seed: Seed of the subset.
        log_on_start: Also evaluate when training starts.
        log_on_end: Also evaluate when training ends.

    """

    def __init__(
        self,
        shards: ShardSpec,
        every_n_steps: int = 100,
        max_samples: int = 2048,
        batch_size: int = 512,
        seed: int = 0,
        log_on_start: bool = True,
        log_on_end: bool = True,
    ) -> None:
        super().__init__(every_n_steps, max_samples, batch_size, log_on_start, log_on_end)
        self.shards = shards
        self.seed = int(seed)
        self.batch: Batch | None = None

    def prepare(self) -> None:
        """Read and normalise the pixel set."""
        if not self.shards:
            self.disable("monitors configured without data: no shards given")
            return
        samples = _subset(_read(self.shards), self.max_samples, self.seed)
        if len(samples) < 2:
            self.disable(f"monitors configured without data: {self.shards} holds {len(samples)} pixel(s)")
            return
        self.batch = Batch.from_samples(samples)

    def compute(self, embed: Any) -> dict[str, float]:
        """Embed the pixel set; embedding std and RankMe."""
        z = embed(self.batch)
        return {"monitor/emb_std": embedding_std(z), "monitor/rankme": rankme(z)}


class ProbeMonitor(EncoderMonitor):
    """Downstream monitor: kNN and linear-probe macro-F1 on a labelled held-out shard set.

    The labelled pixels (``label >= 0``; a fixed random subset of at most ``max_samples``) are split once,
    stratified by class, into a probe-train and a probe-test part; classes with fewer than
    ``min_class_count`` pixels are dropped. Each evaluation embeds both parts and logs
    ``monitor/knn_f1`` (cosine kNN, majority vote of ``k`` neighbours) and ``monitor/linear_f1``
    (multinomial logistic regression on standardised embeddings), both macro-F1 on the test part.

    Args:
        labelled_shards: Shard spec of labelled pixels (e.g. the labelled WorldCereal shards).
        every_n_steps: Evaluate every this many optimiser steps.
        k: Neighbours of the kNN vote.
        max_samples: Labelled pixels used at most.
        test_fraction: Share of pixels in the probe-test part.
        seed: Seed of the subset and the split.
        min_class_count: Classes with fewer pixels are dropped.
        linear: Also fit the logistic-regression probe (the slower of the two).
        max_iter: Iterations of the logistic regression.
        batch_size: Pixels per forward pass.
        log_on_start: Also evaluate when training starts.
        log_on_end: Also evaluate when training ends.

    """

    def __init__(
        self,
        labelled_shards: ShardSpec,
        every_n_steps: int = 100,
        k: int = 20,
        max_samples: int = 4096,
        test_fraction: float = 0.3,
        seed: int = 0,
        min_class_count: int = 5,
        linear: bool = True,
        max_iter: int = 500,
        batch_size: int = 512,
        log_on_start: bool = True,
        log_on_end: bool = True,
    ) -> None:
        super().__init__(every_n_steps, max_samples, batch_size, log_on_start, log_on_end)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.labelled_shards = labelled_shards
        self.k = int(k)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self.min_class_count = int(min_class_count)
        self.linear = bool(linear)
        self.max_iter = int(max_iter)
        self.train_batch: Batch | None = None
        self.test_batch: Batch | None = None
        self.train_y: Tensor | None = None
        self.test_y: Tensor | None = None
        self.classes: np.ndarray | None = None

    def prepare(self) -> None:
        """Read the labelled pixels, drop rare classes, make the fixed stratified split."""
        from sklearn.model_selection import train_test_split

        if not self.labelled_shards:
            self.disable("monitors configured without labelled data: no labelled_shards given")
            return
        samples = _read(self.labelled_shards)
        samples = samples.select(samples.label >= 0)
        if len(samples) == 0:
            self.disable(f"monitors configured without labelled data: {self.labelled_shards} holds no labels")
            return
        samples = _subset(samples, self.max_samples, self.seed)
        classes, counts = np.unique(samples.label, return_counts=True)
        keep = classes[counts >= self.min_class_count]
        samples = samples.select(np.isin(samples.label, keep))
        if len(keep) < 2:
            self.disable(
                f"monitors configured without labelled data: {self.labelled_shards} has {len(keep)} "
                f"class(es) with >= {self.min_class_count} labelled pixels, a probe needs 2"
            )
            return
        y = np.searchsorted(keep, samples.label)
        n_test = max(math.ceil(self.test_fraction * len(y)), len(keep))
        n_train = len(y) - n_test
        if n_train < len(keep):
            self.disable(f"monitors configured without labelled data: too few labelled pixels ({len(y)})")
            return
        tr, te = train_test_split(
            np.arange(len(y)), test_size=n_test, stratify=y, random_state=self.seed, shuffle=True
        )
        tr, te = np.sort(tr), np.sort(te)
        self.classes = keep
        self.train_batch = Batch.from_samples(samples.select(tr))
        self.test_batch = Batch.from_samples(samples.select(te))
        self.train_y = torch.from_numpy(y[tr]).long()
        self.test_y = torch.from_numpy(y[te]).long()
        log.info(
            "ProbeMonitor: %d classes, %d probe-train / %d probe-test pixels", len(keep), len(tr), len(te)
        )

    def compute(self, embed: Any) -> dict[str, float]:
        """Embed both parts; kNN and (optionally) linear-probe macro-F1."""
        from sklearn.metrics import f1_score

        assert self.train_y is not None and self.test_y is not None
        z_tr, z_te = embed(self.train_batch), embed(self.test_batch)
        y_tr, y_te = self.train_y.numpy(), self.test_y.numpy()
        labels = np.arange(len(self.classes))  # type: ignore[arg-type]
        knn = knn_majority_vote(z_tr, self.train_y, z_te, k=self.k).numpy()
        out = {"monitor/knn_f1": float(f1_score(y_te, knn, average="macro", labels=labels, zero_division=0))}
        if self.linear:
            out["monitor/linear_f1"] = float(
                f1_score(
                    y_te,
                    self._linear_probe(z_tr.numpy(), y_tr, z_te.numpy()),
                    average="macro",
                    labels=labels,
                    zero_division=0,
                )
            )
        return out

    def _linear_probe(self, z_tr: np.ndarray, y_tr: np.ndarray, z_te: np.ndarray) -> np.ndarray:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=self.max_iter, C=1.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", RuntimeWarning)  # constant (collapsed) features
            clf.fit(z_tr.astype(np.float64), y_tr)
            return clf.predict(z_te.astype(np.float64))
