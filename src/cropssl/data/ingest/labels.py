"""Labels of an input file: the label column, an optional map of its values to ``ewoc_code``, a report.

WorldCereal extractions carry the 10-digit ``ewoc_code``. Older and foreign layouts carry other columns
(presto-worldcereal's ``CROPTYPE_LABEL`` / ``LANDCOVER_LABEL``, a survey's crop names): pick one with
``--label-column`` and turn its values into ``ewoc_code`` (or any integer codes of a custom legend) with
``--label-map codes.json|codes.csv``. Values the map does not cover are counted and, by policy, dropped
(the sample stays, unlabelled), folded into the map's ``"other"`` entry, or refused.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cropssl.data.ingest.errors import InputFormatError
from cropssl.schema import NO_LABEL

DEFAULT_COLUMN = "ewoc_code"
#: Label columns of older WorldCereal / presto-worldcereal layouts, suggested when ``ewoc_code`` is absent.
KNOWN_LABEL_COLUMNS = ("CROPTYPE_LABEL", "LANDCOVER_LABEL", "croptype", "landcover", "label", "class")


class NoLabelsWarning(UserWarning):
    """A file was expected to carry labels but none could be read."""


def _key(value: Any) -> str:
    """One spelling for a label value: integral numbers without ``.0``, text stripped."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def load_label_map(spec: str | Path | Mapping[Any, Any]) -> dict[str, int]:
    """A label map ``{value: code}`` from a mapping, a ``.json`` file or a two-column ``.csv`` file.

    Raises:
        InputFormatError: the file is missing or unreadable, or a target is not an integer code.

    """
    if isinstance(spec, Mapping):
        raw: Mapping[Any, Any] = spec
        where = "label map"
    else:
        p = Path(spec)
        where = f"label map {p}"
        if not p.is_file():
            raise InputFormatError(f"{where} not found")
        try:
            if p.suffix.lower() == ".json":
                raw = json.loads(p.read_text())
                if not isinstance(raw, Mapping):
                    raise InputFormatError(f"{where}: expected a JSON object {{value: ewoc_code}}")
            elif p.suffix.lower() in (".csv", ".tsv", ".txt"):
                df = pd.read_csv(p, sep=None, engine="python", header=None, dtype=str)
                if df.shape[1] < 2:
                    raise InputFormatError(f"{where}: expected two columns (value, ewoc_code)")
                if not str(df.iloc[0, 1]).strip().lstrip("-").isdigit():
                    df = df.iloc[1:]  # a header row
                raw = dict(zip(df.iloc[:, 0], df.iloc[:, 1]))
            else:
                raise InputFormatError(f"{where}: use a .json or .csv file")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            if isinstance(exc, InputFormatError):
                raise
            raise InputFormatError(f"{where}: cannot read it ({exc})") from exc
    out: dict[str, int] = {}
    for k, v in raw.items():
        try:
            out[_key(k)] = int(str(v).strip())
        except ValueError:
            raise InputFormatError(f"{where}: target {v!r} of {k!r} is not an integer code") from None
    return out


def read_labels(
    table: pd.DataFrame,
    *,
    column: str | None,
    label_map: Any,
    unmapped: str,
    where: str,
) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """Labels (int64, -1 = none) of one row per sample, with the report entry and notes.

    Args:
        table: One row per sample.
        column: The label column (``None``: ``ewoc_code`` when present).
        label_map: ``None``, a mapping or a file (see :func:`load_label_map`).
        unmapped: ``drop`` | ``other`` | ``error`` for values the map does not cover.
        where: ``"path: "`` prefix of messages.

    Raises:
        InputFormatError: the named column is absent, text labels come without a map, or (``unmapped=
            "error"``) the map misses values -- each message says what to pass.

    """
    n = len(table)
    expected = column is not None or label_map is not None
    col = column or DEFAULT_COLUMN
    notes: list[str] = []
    if col not in table.columns:
        candidates = [c for c in table.columns if c in KNOWN_LABEL_COLUMNS or "label" in str(c).lower()]
        if column is not None:
            raise InputFormatError(
                f"{where}no label column {column!r}; columns that may hold labels: {candidates or 'none'}"
            )
        if candidates:
            notes.append(
                f"no {DEFAULT_COLUMN} column: samples are unlabelled; labels may be in {candidates} "
                "(--label-column, with --label-map to turn them into ewoc codes)"
            )
            warnings.warn(f"{where}{notes[-1]}", NoLabelsWarning, stacklevel=2)
        return np.full(n, NO_LABEL, np.int64), {"column": None, "n_labelled": 0}, notes
    values = table[col]
    present = values.notna().to_numpy()
    report: dict[str, Any] = {"column": col}
    label = np.full(n, NO_LABEL, np.int64)
    if label_map is not None:
        mapping = load_label_map(label_map)
        report["map"] = str(label_map) if not isinstance(label_map, Mapping) else "mapping"
        keys = np.array([_key(v) if p else "" for v, p in zip(values.tolist(), present)], dtype=object)
        known = np.array([k in mapping for k in keys]) & present
        missing_keys, counts = np.unique(keys[present & ~known], return_counts=True)
        if len(missing_keys):
            summary = {str(k): int(c) for k, c in zip(missing_keys, counts)}
            report["unmapped"] = summary
            report["unmapped_policy"] = unmapped
            if unmapped == "error":
                raise InputFormatError(
                    f"{where}the label map does not cover {len(summary)} value(s) of {col!r}: {summary}; add "
                    "them, or pass --unmapped drop|other"
                )
            if unmapped == "other":
                if "other" not in mapping:
                    raise InputFormatError(
                        f'{where}--unmapped other needs an "other" entry in the label map (its code)'
                    )
                known = present.copy()
                keys = np.where(np.isin(keys, missing_keys), "other", keys)
        label[known] = [mapping[k] for k in keys[known]]
    elif present.any():
        num = pd.to_numeric(values, errors="coerce")
        text = present & num.isna().to_numpy()
        if text.any():
            examples = sorted({str(v) for v in values[text].head(100)})[:5]
            raise InputFormatError(
                f"{where}label column {col!r} holds text labels (e.g. {examples}); pass --label-map "
                "values.json|csv mapping them to integer ewoc codes"
            )
        label[present] = num.to_numpy()[present].astype(np.int64)
    report["n_labelled"] = int((label >= 0).sum())
    if report["n_labelled"] == 0 and (expected or present.size):
        notes.append(f"no sample got a label from column {col!r}")
        warnings.warn(f"{where}{notes[-1]}", NoLabelsWarning, stacklevel=2)
    return label, report, notes
