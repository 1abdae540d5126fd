"""The report sections a deployer reads first: rare classes, worst groups, robustness, map agreement.

Also the two cell / table helpers every section of ``report.md`` (:mod:`cropssl.evaluation.markdown`) uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cropssl.evaluation.plots import PLOTS, ROBUSTNESS_NAMES


def fmt(v: Any, nd: int = 3) -> str:
    """A table cell: floats to ``nd`` decimals, None as a dash."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A markdown table's lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


RARE_SHARE = 0.02


def rare_and_groups_markdown(doc: Mapping[str, Any], top: int = 6) -> list[str]:
    """Up front: per-class F1 of the rare classes (under 2 % of train) and per-group macro F1, best models."""
    res = doc["results"][:top]
    if not res:
        return []
    train = (doc.get("split") or {}).get("class_counts", {}).get("train", {})
    total = sum(v for k, v in train.items() if k != "(unseen class)") or 1
    rare = [c for c in doc["labels"]["classes"] if 0 < train.get(c, 0) / total < RARE_SHARE]
    L: list[str] = []
    if rare:
        L += [
            f"**Rare classes** (under {RARE_SHARE:.0%} of the training fold), F1 of the best models:",
            "",
        ]
        rows = []
        for r in res:
            cells = []
            for c in rare:
                pc = r["metrics"]["per_class"].get(c, {})
                cells.append(f"{pc.get('f1', 0):.2f}" if pc.get("support") else "absent")
            rows.append([r["name"], *cells])
        L += md_table(["model", *[f"{c} ({train.get(c, 0)} train)" for c in rare]], rows)
        L.append("")
    for key in doc["protocol"].get("group_keys", []):
        groups = sorted({g for r in res for g in r["per_group"].get(key, {})})
        if len(groups) < 2:
            continue
        L += [f"**Per {key}** (macro F1 of the best models on each test group):", ""]
        rows = [
            [r["name"], *[fmt((r["per_group"][key].get(g) or {}).get("macro_f1")) for g in groups]]
            for r in res
        ]
        L += md_table(["model", *groups], rows)
        L.append("")
    return L


def robustness_markdown(rob: Mapping[str, Any] | None) -> list[str]:
    """The robustness table: macro F1 on the clean test fold and its drop under every transform."""
    if not rob:
        return []
    names = [ROBUSTNESS_NAMES.get(t, t.replace("clouds_", "S2 clouds ") + " %") for t in rob["transforms"]]
    cfg = rob["config"]
    rates = ", ".join(f"{100 * r:.0f} %" for r in cfg.get("cloud_rates", []))
    L = ["### Robustness to what the field throws at a model", ""]
    L.append(
        "Macro F1 (over the test fold's classes) of every fitted model on the clean test fold and its "
        "drop when the test pixels lose Sentinel-2 (SAR only), Sentinel-1 or the meteo, get S2 months "
        f"cloud-masked (winter cloudier) at {rates}, or a shifted S2 radiometry (x {cfg.get('s2_gain')} "
        f"{cfg.get('s2_offset'):+g}). Nothing is re-fitted. See "
        f"`{PLOTS['robustness']}`."
    )
    L.append("")
    rows = [
        [m, f"{r['clean']:.3f}", *[f"{-r[t]['drop']:+.3f}" for t in rob["transforms"]]]
        for m, r in sorted(rob["results"].items(), key=lambda kv: -kv[1]["clean"])
    ]
    L += md_table(["model", "clean", *names], rows)
    L.append("")
    return L


def agreement_markdown(rows: list[dict[str, Any]] | None) -> list[str]:
    """The map agreement table: every head's map against each reference layer, beside its macro F1."""
    if not rows:
        return []
    L = ["### Map agreement with a reference product", ""]
    L.append(
        "Every head mapped each cube; the map is compared pixel by pixel with the reference layer "
        "(reference codes outside its class list are excluded). Sample macro F1 and map agreement can "
        "rank heads differently: a head right on the sampled fields can paint the landscape wrongly."
    )
    L.append("")
    by_oa = sorted(rows, key=lambda r: (r["cube"], -r["overall_accuracy"]))
    f1_rank = {
        m: i for i, m in enumerate(sorted({r["method"] for r in rows}, key=lambda m: -_f1(rows, m)), 1)
    }
    table = [
        [
            Path(r["cube"]).name,
            r["method"],
            f"{r['overall_accuracy']:.3f}",
            f"{r['kappa']:.3f}",
            fmt(r.get("mean_iou"), 3),
            fmt(r.get("macro_f1"), 3),
            f1_rank[r["method"]],
            f"{r['n_compared']} / {r['n_excluded']} / {r['n_nodata']}",
            f"`{r['map']}`",
        ]
        for r in by_oa
    ]
    L += md_table(
        ["cube", "head", "overall acc.", "kappa", "mean IoU", "sample macro F1", "F1 rank",
         "px compared / excluded / no-data", "map"],
        table,
    )  # fmt: skip
    L.append("")
    return L


def _f1(rows: list[dict[str, Any]], method: str) -> float:
    return next((r.get("macro_f1") or 0.0) for r in rows if r["method"] == method)
