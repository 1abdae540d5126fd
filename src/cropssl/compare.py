"""One table comparing pre-training runs (e.g. the SSL families of ``experiment=compare_families``).

Each run directory holds the ``summary.json`` that ``cropssl-pretrain`` writes at the end of a run (final
losses, the last ``monitor/*`` values, throughput and MACs). :func:`compare` gathers them into one table,
written as markdown and CSV. :class:`CompareOnMultirunEnd` does it automatically after a Hydra multirun.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback

#: Table columns: (column name, summary.json key, format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("method", "method", "{}"),
    ("steps", "steps", "{:d}"),
    ("final loss", "last_loss", "{:.4f}"),
    ("kNN macro-F1", "monitor/knn_f1", "{:.3f}"),
    ("linear macro-F1", "monitor/linear_f1", "{:.3f}"),
    ("RankMe", "monitor/rankme", "{:.1f}"),
    ("emb std", "monitor/emb_std", "{:.3f}"),
    ("samples/s", "samples_per_s", "{:.0f}"),
    ("wall time (s)", "wall_time_s", "{:.0f}"),
    ("train MMACs/sample", "train_macs_per_sample", "{:.1f}"),
)


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """The ``summary.json`` of a run, with ``run_dir`` set.

    Raises:
        FileNotFoundError: the directory has no summary (the run did not finish, or ``summary=false``).

    """
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: is {run_dir} a finished cropssl-pretrain run (summary=true)?"
        )
    return {**json.loads(path.read_text()), "run_dir": str(run_dir), "overrides": run_overrides(run_dir)}


#: Overrides that say where a run wrote, not what it did (left out of the table).
_BOOKKEEPING = ("run_dir", "name", "hydra", "data.train", "callbacks.probe.labelled_shards")


def run_overrides(run_dir: str | Path) -> str:
    """The command-line overrides of a run (``.hydra/overrides.yaml``), e.g. an Optuna trial's parameters."""
    import yaml

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.exists():
        return ""
    items = yaml.safe_load(path.read_text()) or []
    return " ".join(o for o in items if not str(o).lstrip("+~").startswith(_BOOKKEEPING))


def comparison_table(summaries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run with the :data:`COLUMNS` (missing values are NaN), plus the run directory."""
    rows = []
    for s in summaries:
        row = {name: s.get(key) for name, key, _ in COLUMNS}
        if row["train MMACs/sample"] is not None:
            row["train MMACs/sample"] = row["train MMACs/sample"] / 1e6
        row["overrides"] = s.get("overrides", "")
        row["run"] = Path(s["run_dir"]).name
        rows.append(row)
    return pd.DataFrame(rows, columns=[*(c for c, _, _ in COLUMNS), "overrides", "run"])


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub markdown table of :func:`comparison_table` output ("–" for missing values)."""
    fmt = {name: f for name, _, f in COLUMNS}
    header = list(df.columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for _, row in df.iterrows():
        cells = []
        for col in header:
            v = row[col]
            if v is None or (isinstance(v, float) and pd.isna(v)):
                cells.append("–")
            elif col in fmt and fmt[col] == "{:d}":
                cells.append(str(int(v)))
            else:
                cells.append(fmt.get(col, "{}").format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(run_dirs: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """Write ``compare.md`` and ``compare.csv`` for the runs into ``out``; return the table."""
    df = comparison_table([load_summary(r) for r in run_dirs])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "compare.csv", index=False)
    (out / "compare.md").write_text(to_markdown(df))
    return df


def find_runs(root: str | Path) -> list[Path]:
    """Run directories under ``root`` (those holding a ``summary.json``), sorted."""
    return sorted(p.parent for p in Path(root).glob("*/summary.json"))


class CompareOnMultirunEnd(Callback):
    """Hydra callback: after a multirun, write the comparison table into the sweep directory."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Compare every finished job of the sweep."""
        root = Path(str(config.hydra.sweep.dir))
        runs = find_runs(root)
        if runs:
            df = compare(runs, root)
            print(f"comparison of {len(runs)} runs -> {root / 'compare.md'}\n{to_markdown(df)}")
