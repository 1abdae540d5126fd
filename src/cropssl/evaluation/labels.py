"""WorldCereal legends and label encoding for crop type evaluation.

Samples carry the 10-digit hierarchical WorldCereal ``ewoc_code`` (int64, -1 = unlabelled). A legend
(one entry of WorldCereal's ``class_mappings.json``, e.g. ``CROPTYPE24``, or a user dict) maps codes to
class names; :class:`LabelEncoder` turns codes into contiguous integer classes ``0..K-1``:

* unlabelled samples (code < 0) are excluded (``y = -1``) and counted;
* codes whose class is in ``ignore`` (the legends' own ``"ignore"`` class) are excluded and counted;
* codes the legend does not know are *reported* with their counts (and warned about), then dropped
  (``unknown="drop"``), folded into ``other`` (``unknown="other"``) or refused (``unknown="error"``);
* classes with fewer than ``min_count`` samples (in the data the encoder is fitted on) fold into
  ``other``.

Everything excluded or folded is listed in the report of the returned :class:`LabelledSet`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cropssl.schema import PixelSamples

CLASS_MAPPINGS_FILE = "class_mappings.json"
#: Environment variable pointing at a ``class_mappings.json`` file.
ENV_VAR = "CROPSSL_CLASS_MAPPINGS"
DEFAULT_LEGEND = "CROPTYPE24"
#: Where the shared WorldCereal data lives beside the repository.
_SHARED_MAPPINGS = (
    Path(__file__).resolve().parents[3].parent / "shared/data/worldcereal" / CLASS_MAPPINGS_FILE
)

UnknownPolicy = Literal["drop", "other", "error"]
LegendLike = str | os.PathLike[str] | Mapping[Any, str]


class UnknownCodeWarning(UserWarning):
    """Some ewoc codes are not in the legend (dropped or folded into ``other``, see the report)."""


def class_mappings_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Path of ``class_mappings.json``: ``path``, else ``$CROPSSL_CLASS_MAPPINGS``, else the shared data.

    Raises:
        FileNotFoundError: if the file does not exist.

    """
    p = Path(path or os.environ.get(ENV_VAR) or _SHARED_MAPPINGS)
    if p.is_dir():
        p = p / CLASS_MAPPINGS_FILE
    if not p.is_file():
        raise FileNotFoundError(
            f"WorldCereal {CLASS_MAPPINGS_FILE} not found at {p}; pass its path or set {ENV_VAR}"
        )
    return p


def _read_mappings(path: str | os.PathLike[str] | None) -> dict[str, dict[str, str]]:
    p = class_mappings_path(path)
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{p}: expected {{legend name: {{ewoc_code: class name}}}}")
    return data


def list_legends(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the legends in ``class_mappings.json``."""
    return list(_read_mappings(path))


LEGEND_FILE_SUFFIXES = (".yaml", ".yml", ".json")


def _read_legend_file(p: Path) -> dict[Any, str]:
    if not p.is_file():
        raise ValueError(f"legend file {p} not found (a legend is a name of class_mappings.json or a file)")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text())
        else:
            import yaml

            data = yaml.safe_load(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"legend file {p}: cannot read it ({exc})") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f"legend file {p}: expected a mapping {{ewoc_code: class name}}")
    return dict(data)


def legend_name(legend: LegendLike) -> str:
    """How a legend is called in reports: its name, its file name, or ``custom``."""
    if isinstance(legend, (str, os.PathLike)):
        p = Path(legend)
        return p.name if p.suffix.lower() in LEGEND_FILE_SUFFIXES else str(legend)
    return "custom"


def load_legend(legend: LegendLike, path: str | os.PathLike[str] | None = None) -> dict[int, str]:
    """A legend as ``{ewoc_code: class name}``.

    Args:
        legend: A legend name of ``class_mappings.json`` (``LANDCOVER10``, ``CROPTYPE28``,
            ``CROPTYPE24``, ...), a user mapping ``{code: class name}`` (int or digit-string keys), or the
            path of a ``.yaml`` / ``.yml`` / ``.json`` file holding such a mapping.
        path: ``class_mappings.json`` location when ``legend`` is a name (see :func:`class_mappings_path`).

    Raises:
        ValueError: if the name is not a legend of the file (the message lists the valid names), a
            legend file is missing or not a mapping, or a key of a user mapping is not an integer code.

    """
    if isinstance(legend, (str, os.PathLike)) and Path(legend).suffix.lower() in LEGEND_FILE_SUFFIXES:
        legend = _read_legend_file(Path(legend))
    if isinstance(legend, str):
        mappings = _read_mappings(path)
        if legend not in mappings:
            raise ValueError(f"unknown legend {legend!r}; valid legends: {sorted(mappings)}")
        legend = mappings[legend]
    out = {}
    for k, v in legend.items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError):
            raise ValueError(f"legend key {k!r} is not an integer ewoc code") from None
    return out


@dataclasses.dataclass
class LabelledSet:
    """Encoded labels.

    Attributes:
        y: ``[N]`` int64 class index in ``0..K-1``, -1 = excluded (unlabelled, ignored, dropped).
        classes: The ``K`` class names (sorted, ``other`` last if present).
        report: What happened to every sample (JSON-serialisable): ``n_total``, ``n_used``,
            ``n_excluded``, ``n_unlabelled``, ``unknown_codes`` (code -> count), ``unknown_policy``,
            ``ignored`` (class -> count), ``folded`` (class -> count folded into ``other``), ``unseen``
            (class -> count of classes the encoder was not fitted on), ``class_counts``.

    """

    y: np.ndarray
    classes: list[str]
    report: dict[str, Any]

    @property
    def keep(self) -> np.ndarray:
        """``[N]`` bool, True for samples with a class."""
        return self.y >= 0

    @property
    def names(self) -> np.ndarray:
        """``[N]`` object array of class names (None where excluded)."""
        table = np.array([*self.classes, None], dtype=object)
        return table[np.where(self.y >= 0, self.y, len(self.classes))]


class LabelEncoder:
    """Map ewoc codes to contiguous class indices; fit on (training) data, apply anywhere.

    Args:
        legend: Legend name in ``class_mappings.json`` or a user ``{code: class name}`` mapping.
        min_count: Classes with fewer samples (in the data given to :meth:`fit`) fold into ``other``.
        unknown: Codes not in the legend: ``drop`` (excluded), ``other`` (folded into ``other``) or
            ``error``. They are always counted in the report, and warned about unless ``error``.
        other: Name of the fold-in class.
        ignore: Class names that are excluded (WorldCereal legends use ``"ignore"``).
        path: ``class_mappings.json`` location when ``legend`` is a name.

    Attributes:
        classes_: Class names after :meth:`fit` (sorted, ``other`` last).
        folded_: Classes folded into ``other`` at fit time.

    """

    def __init__(
        self,
        legend: LegendLike = DEFAULT_LEGEND,
        *,
        min_count: int = 1,
        unknown: UnknownPolicy = "drop",
        other: str = "other",
        ignore: Sequence[str] = ("ignore",),
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        if unknown not in ("drop", "other", "error"):
            raise ValueError(f"unknown must be 'drop', 'other' or 'error', got {unknown!r}")
        self.legend_name = legend_name(legend)
        self.legend = load_legend(legend, path)
        self.min_count = int(min_count)
        self.unknown = unknown
        self.other = other
        self.ignore = tuple(ignore)
        self.classes_: list[str] | None = None
        self.folded_: list[str] = []

    def _names(
        self, codes: np.ndarray | PixelSamples, warn: bool = True
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Class name per sample (None if excluded; ``other`` for unknown codes under ``unknown="other"``)."""
        codes = np.asarray(codes.label if isinstance(codes, PixelSamples) else codes, dtype=np.int64)
        if codes.ndim != 1:
            raise ValueError(f"codes must be 1-D, got shape {codes.shape}")
        uniq, inv, counts = np.unique(codes, return_inverse=True, return_counts=True)
        report: dict[str, Any] = {
            "legend": self.legend_name,
            "n_total": len(codes),
            "n_unlabelled": 0,
            "unknown_codes": {},
            "unknown_policy": self.unknown,
            "ignored": {},
        }
        names: list[str | None] = []
        for c, n in zip(uniq.tolist(), counts.tolist()):
            name = self.legend.get(c)
            if c < 0:
                report["n_unlabelled"] += n
            elif name is None:
                report["unknown_codes"][str(c)] = n
                name = self.other if self.unknown == "other" else None
            elif name in self.ignore:
                report["ignored"][name] = report["ignored"].get(name, 0) + n
                name = None
            names.append(name)
        unknown = report["unknown_codes"]
        if unknown:
            msg = (
                f"{sum(unknown.values())} samples have ewoc codes not in legend {self.legend_name} "
                f"(unknown={self.unknown!r}): {unknown}"
            )
            if self.unknown == "error":
                raise ValueError(msg)
            if warn:
                warnings.warn(msg, UnknownCodeWarning, stacklevel=3)
        return np.array([*names, None], dtype=object)[:-1][inv.reshape(-1)], report

    def fit(self, codes: np.ndarray | PixelSamples) -> LabelEncoder:
        """Decide the classes from ``codes`` (ewoc codes or samples); rare classes fold into ``other``."""
        names, _ = self._names(codes, warn=False)
        uniq, counts = np.unique(_present(names), return_counts=True)
        counted = dict(zip(uniq.tolist(), counts.tolist()))
        counted.pop(self.other, None)
        self.folded_ = sorted(k for k, n in counted.items() if n < self.min_count)
        kept = sorted(k for k, n in counted.items() if n >= self.min_count)
        has_other = bool(self.folded_) or self.other in uniq
        self.classes_ = [*kept, self.other] if has_other else kept
        return self

    def transform(self, codes: np.ndarray | PixelSamples) -> LabelledSet:
        """Encode ewoc codes (or samples) with the fitted classes.

        Classes folded at fit time go to ``other``; classes the encoder was not fitted on go to
        ``other`` if it is a class, else are excluded (both reported).
        """
        if self.classes_ is None:
            raise RuntimeError("LabelEncoder.transform called before fit")
        names, report = self._names(codes)
        index = {c: i for i, c in enumerate(self.classes_)}
        other_idx = index.get(self.other, -1)
        y = np.full(len(names), -1, dtype=np.int64)
        folded: dict[str, int] = {}
        unseen: dict[str, int] = {}
        for name in np.unique(_present(names)).tolist():
            sel = names == name
            if name in index:
                y[sel] = index[name]
            else:
                y[sel] = other_idx
                (folded if name in self.folded_ else unseen)[name] = int(sel.sum())
        counts = np.bincount(y[y >= 0], minlength=len(self.classes_))
        report.update(
            folded=folded,
            min_count=self.min_count,
            unseen=unseen,
            unseen_policy="other" if other_idx >= 0 else "drop",
            class_counts={c: int(n) for c, n in zip(self.classes_, counts)},
            n_used=int((y >= 0).sum()),
            n_excluded=int((y < 0).sum()),
        )
        return LabelledSet(y, list(self.classes_), report)

    def fit_transform(self, codes: np.ndarray | PixelSamples) -> LabelledSet:
        """:meth:`fit` then :meth:`transform` on the same codes."""
        return self.fit(codes).transform(codes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (the legend included, so applying it later needs no file)."""
        return {
            "legend_name": self.legend_name,
            "legend": {str(k): v for k, v in sorted(self.legend.items())},
            "min_count": self.min_count,
            "unknown": self.unknown,
            "other": self.other,
            "ignore": list(self.ignore),
            "classes": self.classes_,
            "folded": self.folded_,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelEncoder:
        """Inverse of :meth:`to_dict`."""
        enc = cls(
            d["legend"], min_count=d["min_count"], unknown=d["unknown"], other=d["other"], ignore=d["ignore"]
        )
        enc.legend_name = d["legend_name"]
        enc.classes_ = None if d["classes"] is None else list(d["classes"])
        enc.folded_ = list(d["folded"])
        return enc


def _present(names: np.ndarray) -> np.ndarray:
    """The non-None entries of an object array of names, as str."""
    return np.array([n for n in names.tolist() if n is not None], dtype=str)


def encode_labels(
    codes: np.ndarray | PixelSamples,
    legend: LegendLike = DEFAULT_LEGEND,
    *,
    min_count: int = 1,
    unknown: UnknownPolicy = "drop",
    other: str = "other",
    ignore: Sequence[str] = ("ignore",),
    path: str | os.PathLike[str] | None = None,
) -> LabelledSet:
    """Encode labels in one call (classes decided on the same data); see :class:`LabelEncoder`.

    Returns:
        A :class:`LabelledSet` (``y`` with -1 for excluded samples, class names, report).

    """
    enc = LabelEncoder(legend, min_count=min_count, unknown=unknown, other=other, ignore=ignore, path=path)
    return enc.fit_transform(codes)


__all__ = [
    "DEFAULT_LEGEND",
    "LabelEncoder",
    "LabelledSet",
    "UnknownCodeWarning",
    "class_mappings_path",
    "encode_labels",
    "list_legends",
    "load_legend",
]
