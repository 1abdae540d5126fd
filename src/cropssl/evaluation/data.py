"""The labelled data of an evaluation: reading the sources, encoding the labels, the split and its report.

:func:`load_data` reads shard directories and WorldCereal files into one sample set; :func:`prepare_data`
encodes the labels with the legend (classes decided on the train + val folds) and builds the split;
:func:`split_report` describes it (fold sizes, class counts per fold, leakage / overlap checks).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.evaluation.labels import LabelEncoder, UnknownCodeWarning, load_legend
from cropssl.evaluation.splits import MissingClassWarning, Split, random_split
from cropssl.schema import PixelSamples

__all__ = ["PreparedData", "load_data", "prepare_data", "split_report"]


def load_data(paths: Sequence[str | Path], timesteps: int = 12) -> tuple[PixelSamples, list[dict[str, Any]]]:
    """Read labelled shard directories and / or WorldCereal files (parquet, NetCDF) into one sample set.

    Sample ids are made unique across sources (prefixed with the source name when they collide).

    Args:
        paths: Shard directories (with ``manifest.json``) and files readable by
            :func:`cropssl.data.ingest.read_input`.
        timesteps: Months per window for files (shards keep their own T, which must equal it).

    Returns:
        The concatenated samples and one description per source (path, format, samples, labelled).

    Raises:
        FileNotFoundError: a missing path.
        ValueError: no path, or sources with a different T.

    """
    if not paths:
        raise ValueError("no data given: pass datasets=[shard dirs and/or WorldCereal parquet files]")
    parts: list[PixelSamples] = []
    sources: list[dict[str, Any]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"data {p} does not exist")
        if p.is_dir():
            from cropssl.data.shards import read_shards

            s, fmt = read_shards(p), "shards"
        else:
            from cropssl.data.ingest import read_input

            s, rep = read_input(p, timesteps)
            fmt = rep.format
        if s.timesteps != timesteps:
            raise ValueError(f"data {p} has T={s.timesteps} timesteps, expected timesteps={timesteps}")
        src = np.asarray(s.meta["source"], dtype=object)
        s.meta["source"] = np.where(src == "", p.name, src)
        parts.append(s)
        sources.append(
            {"path": str(p), "format": fmt, "samples": len(s), "labelled": int((s.label >= 0).sum())}
        )
    samples = PixelSamples.concat(parts) if len(parts) > 1 else parts[0]
    ids = np.asarray(samples.meta["sample_id"], dtype=object).astype(str)
    if len(set(ids.tolist())) < len(ids):
        owner = np.concatenate([np.full(len(pt), i) for i, pt in enumerate(parts)])
        ids = np.array([f"{Path(str(paths[o])).name}:{i}" for o, i in zip(owner, ids)], dtype=object)
        if len(set(ids.tolist())) < len(ids):
            raise ValueError("duplicate sample ids within a data source; cannot build a split")
    samples.meta["sample_id"] = np.asarray(ids, dtype=object)
    return samples, sources


@dataclasses.dataclass
class PreparedData:
    """Labelled samples, their classes and the split.

    Attributes:
        samples: The samples kept (labelled with a class), in split order.
        y: ``[N]`` class index of each sample (-1 for test samples of classes never seen in training,
            excluded from scoring).
        classes: Class names.
        split: The split (same order as ``samples``).
        label_report: The label encoder's report (folded, unknown codes, ignored, unseen, class counts).
        label_encoder: The fitted encoder (saved with heads).
        warnings: Messages of data / label / split warnings.

    """

    samples: PixelSamples
    y: np.ndarray
    classes: list[str]
    split: Split
    label_report: dict[str, Any]
    label_encoder: LabelEncoder
    warnings: list[str]

    def fold(self, name: str) -> np.ndarray:
        """Boolean mask of a fold's scored samples (class known)."""
        return (self.split.fold == name) & (self.y >= 0)


def prepare_data(
    samples: PixelSamples,
    *,
    legend: str | Mapping[Any, str] = "CROPTYPE24",
    min_count: int = 10,
    unknown: str = "drop",
    split: Callable[..., Split] | None = None,
    class_mappings: str | Path | None = None,
) -> PreparedData:
    """Encode labels, split, and fit the final classes on the training fold.

    Args:
        samples: All samples (unlabelled ones are dropped).
        legend: Legend name of ``class_mappings.json`` or a ``{code: name}`` mapping.
        min_count: Classes with fewer training samples fold into ``other``.
        unknown: Policy for codes the legend does not know (``drop``, ``other``, ``error``).
        split: Split builder called as ``split(samples, labels=...)`` (default stratified random).
        class_mappings: ``class_mappings.json`` holding the legend names (default: see
            :func:`~cropssl.evaluation.labels.class_mappings_path`).

    Raises:
        ValueError: unknown legend (lists the valid ones), no labelled sample, or an empty test fold.

    """
    load_legend(
        legend, class_mappings
    )  # unknown legend -> ValueError listing the valid names, before any work
    notes: list[str] = []
    prelim = LabelEncoder(legend, min_count=1, unknown=unknown, path=class_mappings).fit_transform(samples)  # type: ignore[arg-type]
    if not prelim.keep.any():
        raise ValueError(
            f"no sample has a class of legend {prelim.report['legend']} "
            f"({prelim.report['n_total']} samples, {prelim.report['n_unlabelled']} unlabelled, "
            f"unknown codes {prelim.report['unknown_codes']})"
        )
    kept = samples.select(prelim.keep)
    names = prelim.names[prelim.keep]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sp = (split or random_split)(kept, labels=prelim.y[prelim.keep])
    for w in caught:  # the builder's missing-class warning names indices; ours names classes below
        if not issubclass(w.category, MissingClassWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not np.array_equal(np.asarray(sp.sample_id, dtype=object), np.asarray(kept.meta["sample_id"], object)):
        order = {s: i for i, s in enumerate(kept.meta["sample_id"].tolist())}
        idx = np.array([order[s] for s in sp.sample_id.tolist()])
        kept, names = kept.select(idx), names[idx]
    fold = sp.fold
    if not (fold == "test").any():
        raise ValueError(f"the split leaves the test fold empty ({sp.info})")
    fit_on = fold != "test"
    enc = LabelEncoder(legend, min_count=min_count, unknown=unknown, path=class_mappings).fit(
        kept.select(fit_on)
    )  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownCodeWarning)  # already warned by the preliminary encoding
        labelled = enc.transform(kept)
    report = dict(labelled.report)
    report.update(
        n_total=int(prelim.report["n_total"]),
        n_unlabelled=int(prelim.report["n_unlabelled"]),
        unknown_codes=prelim.report["unknown_codes"],
        ignored=prelim.report["ignored"],
        n_excluded_before_split=int((~prelim.keep).sum()),
    )
    notes += _check_folds(names, fold, labelled.y, enc)
    y = labelled.y
    if report["unknown_codes"]:
        notes.append(
            f"{sum(report['unknown_codes'].values())} samples have ewoc codes unknown to legend "
            f"{report['legend']} ({unknown}): {report['unknown_codes']}"
        )
    return PreparedData(kept, y, list(enc.classes_ or []), sp, report, enc, notes)


def _check_folds(names: np.ndarray, fold: np.ndarray, y: np.ndarray, enc: LabelEncoder) -> list[str]:
    """Name the classes of val / test the train fold lacks (warned); refuse folds a score says nothing on.

    Raises:
        ValueError: no test sample of a class seen in training, or fewer than 2 classes in train or test.

    """
    notes: list[str] = []
    train_names = set(names[fold == "train"].tolist())
    for f in ("val", "test"):
        absent = sorted(set(names[fold == f].tolist()) - train_names)
        if absent:
            counts = {c: int((names[fold == f] == c).sum()) for c in absent}
            where = "folded into 'other'" if enc.other in (enc.classes_ or []) else "excluded from scoring"
            msg = f"classes absent from the train fold but present in {f}: {counts} ({where})"
            notes.append(msg)
            warnings.warn(msg, MissingClassWarning, stacklevel=3)
    if not ((fold == "test") & (y >= 0)).any():
        raise ValueError(
            "no test sample has a class seen in training (test classes "
            f"{sorted(set(names[fold == 'test']))}, train classes {sorted(train_names)}); "
            "choose another split or legend"
        )
    test_classes = sorted({int(c) for c in y[(fold == "test") & (y >= 0)]})
    if len(enc.classes_ or []) < 2 or len(test_classes) < 2:
        which = "train" if len(enc.classes_ or []) < 2 else "test"
        classes = list(enc.classes_ or [])
        present = classes if which == "train" else [classes[i] for i in test_classes]
        raise ValueError(
            f"the split leaves {len(present)} class(es) in the {which} fold ({present}): any classifier "
            "scores a macro F1 of 1.0 on one class, which says nothing. Choose a split whose train and test "
            "folds each hold at least 2 classes (another split.test_groups / seed), or another legend"
        )
    return notes


def split_report(data: PreparedData, samples: PixelSamples | None = None) -> dict[str, Any]:
    """Class counts per fold, group counts, and the leakage check of a split."""
    from cropssl.evaluation.splits import SplitLeakageError, check_leakage, group_values

    sp = data.split
    s = samples if samples is not None else data.samples
    counts = {
        f: {c: int(((sp.fold == f) & (data.y == i)).sum()) for i, c in enumerate(data.classes)}
        for f in ("train", "val", "test")
    }
    for f in counts:
        counts[f]["(unseen class)"] = int(((sp.fold == f) & (data.y < 0)).sum())
    out: dict[str, Any] = {"info": sp.info, "fold_sizes": sp.counts(), "class_counts": counts}
    from cropssl.evaluation.checks import REGION_KEYS, overlap_of

    out["overlap"] = overlap_of(
        sp.fold, {**{k: s.meta[k] for k in REGION_KEYS if k in s.meta}, "year": s.year.astype(str)}
    )
    info = sp.info or {}
    key = info.get("key") or ("year" if info.get("kind") == "temporal" else None)
    if key is not None:
        try:
            groups = check_leakage(sp, group_values(s, key, info.get("block_size_km")))
            out["leakage"] = {
                "key": key,
                "passed": True,
                "groups_per_fold": groups,
                "message": f"no {key} group occurs in both train/val and test",
            }
        except SplitLeakageError as exc:
            out["leakage"] = {"key": key, "passed": False, "message": str(exc)}
    else:
        shared = {}
        for k in ("country", "h3_l3_cell"):
            g = np.asarray(s.meta[k], dtype=object).astype(str)
            tr = set(g[sp.fold != "test"].tolist()) - {""}
            te = set(g[sp.fold == "test"].tolist()) - {""}
            shared[k] = {"shared": len(tr & te), "test_groups": len(te)}
        out["leakage"] = {
            "key": None,
            "passed": None,
            "shared_groups": shared,
            "message": (
                "random split: no group separation -- train and test share "
                + ", ".join(f"{v['shared']}/{v['test_groups']} {k} groups" for k, v in shared.items())
                + " (nearby samples on both sides make scores optimistic)"
            ),
        }
    return out
