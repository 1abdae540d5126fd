"""Train / validation / test splits of labelled samples, leakage checks and split files.

A :class:`Split` assigns every sample (identified by ``meta["sample_id"]``) to a fold ``train``,
``val`` or ``test``. Builders:

* :func:`random_split` -- (stratified) random split;
* :func:`group_split` -- hold out whole groups of a key: any meta key (``country``, ``ref_id``,
  ``h3_l3_cell``, ``source``), ``year``, or ``spatial_block`` (a lat/lon grid of ``block_size_km``);
  test groups are given by name or drawn at random;
* :func:`temporal_split` -- hold out years.

The validation fold is carved out of the training part (``val_size`` is a fraction of it), stratified
at random or, with ``val_grouped=True``, as whole groups. Every builder checks its result
(:func:`validate_split`): an empty test fold is an error, classes absent from train are warned about,
and group splits run :func:`check_leakage`, which raises :class:`SplitLeakageError` naming every group
on both sides. Splits are saved and loaded as JSON or parquet (:mod:`cropssl.evaluation.split_files`).

The Hydra configs in ``configs/split/`` build these functions with ``_partial_: true``; the evaluation
app then calls the partial with the samples (and, for stratification, the encoded labels).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cropssl.schema import PixelSamples

FOLDS: tuple[str, ...] = ("train", "val", "test")
KM_PER_DEGREE = 111.32
#: Group keys computed from the samples rather than read from their meta.
DERIVED_KEYS: tuple[str, ...] = ("year", "spatial_block")


class SplitLeakageError(ValueError):
    """Some groups occur on both sides of a split.

    Attributes:
        leaks: ``{"train/test": [groups...], ...}`` for every fold pair that leaks.

    """

    def __init__(self, message: str, leaks: Mapping[str, Sequence[str]]) -> None:
        super().__init__(message)
        self.leaks = {k: list(v) for k, v in leaks.items()}


class MissingClassWarning(UserWarning):
    """Some classes of the val / test folds have no training sample."""


@dataclasses.dataclass(eq=False)
class Split:
    """Fold of every sample, by sample id.

    Attributes:
        sample_id: ``[N]`` unique sample ids (object array of str).
        fold: ``[N]`` fold per sample: ``train``, ``val`` or ``test``.
        info: How the split was made (kind, key, groups, seed, ...); JSON-serialisable.

    """

    sample_id: np.ndarray
    fold: np.ndarray
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sample_id = np.asarray([str(s) for s in self.sample_id], dtype=object)
        self.fold = np.asarray([str(f) for f in self.fold], dtype=object)
        if self.sample_id.shape != self.fold.shape or self.sample_id.ndim != 1:
            raise ValueError(f"sample_id {self.sample_id.shape} and fold {self.fold.shape} must be [N]")
        bad = sorted(set(self.fold.tolist()) - set(FOLDS))
        if bad:
            raise ValueError(f"unknown fold name(s) {bad}; folds are {FOLDS}")
        _check_unique(self.sample_id)

    def __len__(self) -> int:
        return len(self.sample_id)

    def ids(self, fold: str) -> np.ndarray:
        """Sample ids of ``fold``."""
        return self.sample_id[self.fold == _fold(fold)]

    def counts(self) -> dict[str, int]:
        """Number of samples per fold."""
        return {f: int((self.fold == f).sum()) for f in FOLDS}

    def folds_of(self, sample_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Fold of each of ``sample_ids`` (any order); ``""`` for ids not in the split."""
        lut = dict(zip(self.sample_id.tolist(), self.fold.tolist()))
        return np.asarray([lut.get(str(s), "") for s in sample_ids], dtype=object)

    def indices(self, samples: PixelSamples | Sequence[str] | np.ndarray, fold: str) -> np.ndarray:
        """Indices into ``samples`` (or into a list of sample ids) of the samples of ``fold``.

        Raises:
            KeyError: if some ids of the fold are not among the samples (split made for other data).

        """
        ids = samples.meta["sample_id"] if isinstance(samples, PixelSamples) else samples
        idx = np.flatnonzero(self.folds_of(ids) == _fold(fold))
        n_fold = int((self.fold == fold).sum())
        if len(idx) != n_fold:
            have = {str(s) for s in ids}
            missing = [s for s in self.ids(fold).tolist() if s not in have]
            raise KeyError(
                f"{len(missing)} {fold} ids of the split are not in the samples (e.g. {missing[:5]})"
            )
        return idx

    def select(self, samples: PixelSamples, fold: str) -> PixelSamples:
        """The samples of ``fold`` (matched by sample id, in the order of ``samples``)."""
        return samples.select(self.indices(samples, fold))


def _fold(fold: str) -> str:
    if fold not in FOLDS:
        raise ValueError(f"unknown fold {fold!r}; folds are {FOLDS}")
    return fold


def _check_unique(ids: np.ndarray) -> None:
    u, n = np.unique(ids.astype(str), return_counts=True)
    if (n > 1).any():
        raise ValueError(f"sample ids must be unique to define a split; repeated: {u[n > 1][:5].tolist()}")
    if (u == "").any():
        raise ValueError("some samples have an empty sample_id; splits identify samples by sample_id")


# ---------------------------------------------------------------------------------------------- groups
def spatial_blocks(latlon: np.ndarray, block_size_km: float) -> np.ndarray:
    """Id ``"<row>_<col>"`` of the roughly square block of ``block_size_km`` holding each point.

    Rows are ``block_size_km`` high (``KM_PER_DEGREE`` km per degree of latitude); the columns of each
    row are ``block_size_km`` wide at the row's central latitude.

    Args:
        latlon: ``[N, 2]`` latitude and longitude in degrees.
        block_size_km: Block size in km (> 0).

    Returns:
        ``[N]`` object array of block ids.

    Raises:
        ValueError: If ``block_size_km <= 0`` or a sample has no location (NaN).

    """
    if not block_size_km > 0:
        raise ValueError(f"block_size_km must be > 0, got {block_size_km}")
    latlon = np.asarray(latlon, dtype=np.float64)
    missing = ~np.isfinite(latlon).all(axis=1)
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} of {len(latlon)} samples have no location (lat/lon missing) and cannot be "
            "placed in a spatial block; split on a meta key (country, h3_l3_cell, source) or drop them"
        )
    row = np.floor(latlon[:, 0] * KM_PER_DEGREE / block_size_km).astype(np.int64)
    center = (row + 0.5) * block_size_km / KM_PER_DEGREE
    km_per_deg_lon = KM_PER_DEGREE * np.maximum(np.cos(np.radians(np.clip(center, -89.9, 89.9))), 1e-3)
    col = np.floor(latlon[:, 1] * km_per_deg_lon / block_size_km).astype(np.int64)
    return np.asarray([f"{r}_{c}" for r, c in zip(row.tolist(), col.tolist())], dtype=object)


def group_values(samples: PixelSamples, key: str, block_size_km: float | None = None) -> np.ndarray:
    """Group of each sample for ``key``: a meta key, ``year`` or ``spatial_block``.

    Args:
        samples: The samples.
        key: ``country``, ``ref_id``, ``h3_l3_cell``, ``source`` (any meta key), ``year`` or
            ``spatial_block`` (needs ``block_size_km``).
        block_size_km: Block size of ``spatial_block``.

    Returns:
        ``[N]`` object array of group names (str).

    """
    if key == "year":
        return np.asarray([str(int(y)) for y in samples.year], dtype=object)
    if key == "spatial_block":
        if block_size_km is None:
            raise ValueError("key='spatial_block' needs block_size_km")
        return spatial_blocks(samples.latlon, block_size_km)
    if key not in samples.meta:
        raise KeyError(f"unknown group key {key!r}; available: {sorted(samples.meta) + list(DERIVED_KEYS)}")
    return np.asarray([str(v) for v in samples.meta[key]], dtype=object)


# ---------------------------------------------------------------------------------------------- helpers
def _check_fraction(name: str, v: float) -> None:
    if not 0 <= v < 1:
        raise ValueError(f"{name} must be in [0, 1), got {v}")


def _labels(samples: PixelSamples, labels: np.ndarray | None) -> np.ndarray:
    lab = samples.label if labels is None else np.asarray(labels)
    if lab.shape != (len(samples),):
        raise ValueError(f"labels has shape {lab.shape}, expected ({len(samples)},)")
    return lab


def _stratified_take(
    strata: np.ndarray, pool: np.ndarray, frac: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask choosing ``round(frac * n)`` random members of each stratum among ``pool``."""
    take = np.zeros(len(strata), dtype=bool)
    idx = rng.permutation(np.flatnonzero(pool))
    if frac <= 0 or len(idx) == 0:
        return take
    s = np.unique(strata[idx], return_inverse=True)[1].reshape(-1)
    order = np.argsort(s, kind="stable")
    sizes = np.bincount(s)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    rank = np.arange(len(order)) - np.repeat(starts, sizes)  # rank within stratum, in random order
    n_take = np.floor(sizes * frac + 0.5).astype(np.int64)
    take[idx[order[rank < np.repeat(n_take, sizes)]]] = True
    return take


def _draw_groups(groups: np.ndarray, pool: np.ndarray, frac: float, rng: np.random.Generator) -> list[str]:
    """Random whole groups of ``pool`` holding about ``frac`` of its samples (>= 1 group, never all)."""
    names, counts = np.unique(groups[pool].astype(str), return_counts=True)
    if len(names) < 2:
        raise ValueError(f"need at least 2 groups to draw held-out groups, found {names.tolist()}")
    target = frac * counts.sum()
    chosen: list[str] = []
    total = 0
    for i in rng.permutation(len(names))[:-1]:
        if chosen and total + counts[i] / 2 > target:
            break
        chosen.append(str(names[i]))
        total += counts[i]
    return sorted(chosen)


def _carve_val(
    fold: np.ndarray,
    labels: np.ndarray,
    val_size: float,
    rng: np.random.Generator,
    groups: np.ndarray | None = None,
) -> list[str] | None:
    """Move ``val_size`` of the train fold to val in place: whole groups if ``groups`` is given."""
    train = fold == "train"
    if val_size <= 0 or not train.any():
        return None
    if groups is not None:
        val_groups = _draw_groups(groups, train, val_size, rng)
        fold[train & np.isin(groups, val_groups)] = "val"
        return val_groups
    fold[_stratified_take(labels, train, val_size, rng)] = "val"
    return None


def validate_split(split: Split, labels: np.ndarray | None = None) -> None:
    """Refuse an empty test fold; warn (:class:`MissingClassWarning`) naming classes absent from train.

    Args:
        split: The split.
        labels: ``[N]`` labels in split order (ewoc codes or encoded classes; negatives are ignored).

    Raises:
        ValueError: if the test (or train) fold is empty.

    """
    counts = split.counts()
    for f in ("test", "train"):
        if counts[f] == 0:
            raise ValueError(f"the {f} fold of the split is empty ({split.info}); counts {counts}")
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.shape != (len(split),):
        raise ValueError(f"labels has shape {labels.shape}, expected ({len(split)},)")
    train = set(labels[(split.fold == "train") & (labels >= 0)].tolist())
    for f in ("val", "test"):
        absent = sorted(set(labels[(split.fold == f) & (labels >= 0)].tolist()) - train)
        if absent:
            n = int(np.isin(labels[split.fold == f], absent).sum())
            warnings.warn(
                f"{n} {f} samples have classes absent from train: {absent}", MissingClassWarning, stacklevel=3
            )


# ---------------------------------------------------------------------------------------------- builders
def random_split(
    samples: PixelSamples,
    test_size: float = 0.2,
    val_size: float = 0.1,
    *,
    stratify: bool = True,
    labels: np.ndarray | None = None,
    seed: int = 0,
) -> Split:
    """Random split, stratified by label (each class split in the same proportions, to +-1 sample).

    Args:
        samples: Samples with unique ``meta["sample_id"]``.
        test_size: Fraction of samples in test.
        val_size: Fraction of the *training part* moved to val.
        stratify: Stratify test and val by ``labels``.
        labels: ``[N]`` labels to stratify by (default: the ewoc codes ``samples.label``).
        seed: Random seed.

    """
    _check_fraction("test_size", test_size)
    _check_fraction("val_size", val_size)
    rng = np.random.default_rng(seed)
    lab = _labels(samples, labels)
    strata = lab if stratify else np.zeros(len(samples), dtype=np.int64)
    fold = np.full(len(samples), "train", dtype=object)
    fold[_stratified_take(strata, np.ones(len(samples), bool), test_size, rng)] = "test"
    _carve_val(fold, strata, val_size, rng)
    info = {
        "kind": "random",
        "test_size": test_size,
        "val_size": val_size,
        "stratify": stratify,
        "seed": seed,
    }
    split = Split(samples.meta["sample_id"], fold, info)
    validate_split(split, lab)
    return split


def group_split(
    samples: PixelSamples,
    key: str = "country",
    test_groups: Sequence[Any] | None = None,
    *,
    test_size: float = 0.2,
    val_size: float = 0.1,
    val_grouped: bool = False,
    block_size_km: float | None = None,
    labels: np.ndarray | None = None,
    seed: int = 0,
) -> Split:
    """Hold out whole groups (countries, datasets, H3 cells, spatial blocks, years) as the test fold.

    Args:
        samples: Samples with unique ``meta["sample_id"]``.
        key: Grouping key (see :func:`group_values`).
        test_groups: Groups held out for test. If None, random groups holding about ``test_size`` of
            the samples are drawn (at least one group, never all).
        test_size: Fraction of samples to hold out when ``test_groups`` is None.
        val_size: Fraction of the training part moved to val.
        val_grouped: Val as whole groups (else a random part of the train groups, stratified by label).
        block_size_km: Block size for ``key="spatial_block"``.
        labels: ``[N]`` labels for stratification and the missing-class check (default ``samples.label``).
        seed: Random seed.

    Raises:
        ValueError: if a requested group is not present (names the available groups) or test is empty.
        SplitLeakageError: if a group ends up on both sides (cannot happen unless this code is broken).

    """
    _check_fraction("test_size", test_size)
    _check_fraction("val_size", val_size)
    rng = np.random.default_rng(seed)
    lab = _labels(samples, labels)
    groups = group_values(samples, key, block_size_km)
    if test_groups is None:
        test_groups = _draw_groups(groups, np.ones(len(groups), bool), test_size, rng)
    else:
        test_groups = sorted(str(g) for g in test_groups)
        missing = sorted(set(test_groups) - set(groups.tolist()))
        if missing:
            raise ValueError(
                f"{key} group(s) {missing} not in the samples; available: {sorted(set(groups))[:30]}"
            )
    fold = np.full(len(samples), "train", dtype=object)
    fold[np.isin(groups, test_groups)] = "test"
    val_groups = _carve_val(fold, lab, val_size, rng, groups if val_grouped else None)
    info = {
        "kind": "group",
        "key": key,
        "test_groups": list(test_groups),
        "val_groups": val_groups,
        "test_size": test_size,
        "val_size": val_size,
        "val_grouped": val_grouped,
        "block_size_km": block_size_km,
        "seed": seed,
    }
    split = Split(samples.meta["sample_id"], fold, info)
    validate_split(split, lab)
    pairs = (("train", "test"), ("val", "test")) + ((("train", "val"),) if val_grouped else ())
    check_leakage(split, groups, pairs=pairs)
    return split


def temporal_split(
    samples: PixelSamples,
    test_years: Sequence[int] | None = None,
    *,
    val_size: float = 0.1,
    labels: np.ndarray | None = None,
    seed: int = 0,
) -> Split:
    """Hold out whole years as the test fold.

    Args:
        samples: Samples with unique ``meta["sample_id"]``.
        test_years: Years held out; None = the latest year present.
        val_size: Fraction of the training part moved to val (stratified random).
        labels: ``[N]`` labels for stratification and the missing-class check (default ``samples.label``).
        seed: Random seed.

    """
    if test_years is None:
        known = np.unique(samples.year[samples.year > 0])
        if len(known) < 2:
            raise ValueError(f"a temporal split needs at least 2 known years, found {known.tolist()}")
        test_years = [int(known[-1])]
    test_years = sorted(int(y) for y in test_years)
    split = group_split(samples, "year", test_years, val_size=val_size, labels=labels, seed=seed)
    split.info = {"kind": "temporal", "test_years": test_years, "val_size": val_size, "seed": seed}
    return split


# ---------------------------------------------------------------------------------------------- leakage
def check_leakage(
    split: Split,
    groups: np.ndarray | Sequence[Any] | str,
    *,
    samples: PixelSamples | None = None,
    pairs: Sequence[tuple[str, str]] = (("train", "test"), ("val", "test")),
    block_size_km: float | None = None,
) -> dict[str, int]:
    """Raise :class:`SplitLeakageError` if any group has samples in both folds of any of ``pairs``.

    Args:
        split: The split to check.
        groups: Group of each sample in split order, or a group key (then ``samples`` is required and
            matched to the split by sample id; see :func:`group_values`).
        samples: Samples to compute groups from when ``groups`` is a key.
        pairs: Fold pairs that must not share groups.
        block_size_km: Block size when ``groups="spatial_block"``.

    Returns:
        Number of distinct groups per fold.

    Raises:
        SplitLeakageError: naming the leaking groups of every leaking pair.

    """
    if isinstance(groups, str):
        if samples is None:
            raise ValueError("check_leakage with a group key needs samples")
        lut = {str(s): i for i, s in enumerate(samples.meta["sample_id"])}
        missing = [s for s in split.sample_id.tolist() if s not in lut]
        if missing:
            raise KeyError(f"{len(missing)} split ids are not in the samples (e.g. {missing[:5]})")
        g = group_values(samples, groups, block_size_km)[[lut[s] for s in split.sample_id.tolist()]]
    else:
        g = np.asarray([str(v) for v in groups], dtype=object)
        if len(g) != len(split):
            raise ValueError(f"groups has {len(g)} entries, split has {len(split)}")
    per_fold = {f: set(g[split.fold == f].tolist()) for f in FOLDS}
    leaks = {f"{a}/{b}": sorted(per_fold[a] & per_fold[b]) for a, b in pairs}
    leaks = {k: v for k, v in leaks.items() if v}
    if leaks:
        parts = [f"{k}: {len(v)} group(s) {v[:20]}" for k, v in leaks.items()]
        raise SplitLeakageError("split leaks groups across folds -- " + "; ".join(parts), leaks)
    return {f: len(v) for f, v in per_fold.items()}


__all__ = [
    "FOLDS",
    "MissingClassWarning",
    "Split",
    "SplitLeakageError",
    "check_leakage",
    "group_split",
    "group_values",
    "random_split",
    "spatial_blocks",
    "temporal_split",
    "validate_split",
]
