"""The markdown of an evaluation report (``report.md``), rendered from the content of ``results.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.evaluation.encoders import map_core_hours
from cropssl.evaluation.plots import PLOTS, ROBUSTNESS_NAMES

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
        L += _table(["model", *[f"{c} ({train.get(c, 0)} train)" for c in rare]], rows)
        L.append("")
    for key in doc["protocol"].get("group_keys", []):
        groups = sorted({g for r in res for g in r["per_group"].get(key, {})})
        if len(groups) < 2:
            continue
        L += [f"**Per {key}** (macro F1 of the best models on each test group):", ""]
        rows = [
            [r["name"], *[_fmt((r["per_group"][key].get(g) or {}).get("macro_f1")) for g in groups]]
            for r in res
        ]
        L += _table(["model", *groups], rows)
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
    L += _table(["model", "clean", *names], rows)
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
            _fmt(r.get("mean_iou"), 3),
            _fmt(r.get("macro_f1"), 3),
            f1_rank[r["method"]],
            f"{r['n_compared']} / {r['n_excluded']} / {r['n_nodata']}",
            f"`{r['map']}`",
        ]
        for r in by_oa
    ]
    L += _table(
        ["cube", "head", "overall acc.", "kappa", "mean IoU", "sample macro F1", "F1 rank",
         "px compared / excluded / no-data", "map"],
        table,
    )  # fmt: skip
    L.append("")
    return L


def _f1(rows: list[dict[str, Any]], method: str) -> float:
    return next((r.get("macro_f1") or 0.0) for r in rows if r["method"] == method)


def write_partial_report(out: Path, results: list[dict[str, Any]], total: int, title: str | None) -> None:
    """Write ``report.md`` marked INCOMPLETE with the results so far (the full report replaces it).

    An interrupted evaluation so leaves what it measured, and says it is partial.
    """
    from cropssl.io.atomic import write_text

    lines = [
        f"# {title or 'cropssl evaluation'}",
        "",
        f"> **INCOMPLETE**: {len(results)} of {total} encoder x strategy results so far (the evaluation is "
        "running or was interrupted); no significance tests or checks yet.",
        "",
        "| model | macro F1 | 95 % CI |",
        "| --- | ---: | --- |",
        *(
            f"| {r['name']} | {r['macro_f1']:.3f} | {r['ci']['low']:.3f}-{r['ci']['high']:.3f} |"
            for r in results
        ),
    ]
    write_text(out / "report.md", "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- markdown
def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _si(v: float | None) -> str:
    if v is None:
        return "–"
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.2f} {unit}"
    return f"{v:.0f}"


def _delta_row(name: str, v: dict[str, Any], with_overlap: bool) -> list[str]:
    """A row of a significance table: method, paired delta, its CI, [CI overlap,] verdict."""
    pdl = v["paired_delta"]
    overlap = ["yes" if v["ci_overlap"] else "no"] if with_overlap else []
    verdict = "significant" if v["paired_significant"] else "not significant"
    return [name, f"{pdl['delta']:+.3f}", f"{pdl['low']:+.3f} to {pdl['high']:+.3f}", *overlap, verdict]


def _images(*pictures: tuple[str, str]) -> list[str]:
    """Markdown image lines (each followed by a blank line) for ``(alt text, PLOTS key)`` pairs."""
    return [line for alt, key in pictures for line in (f"![{alt}]({PLOTS[key]})", "")]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(doc: Mapping[str, Any]) -> str:
    """The text of ``report.md`` from the content of ``results.json``."""
    sections = (
        _header,
        _summary,
        _what,
        _data,
        _split,
        _results,
        _per_class,
        _per_group,
        _efficiency,
        _finetune_runs,
    )
    return "\n".join(line for section in sections for line in section(doc))


def _header(doc: Mapping[str, Any]) -> list[str]:
    """Title, provenance and the self-check box."""
    L: list[str] = [f"# {doc['title']}", ""]
    L.append(
        f"Generated {doc['created']} by `cropssl-evaluate`"
        + (f": `{doc['command']}`" if doc.get("command") else "")
        + "."
    )
    L.append("")
    if doc.get("checks"):
        L.append("> **Read these before the scores** (self-checks of this evaluation):")
        L.append(">")
        L += [f"> - **{c['check']}**: {c['message']}" for c in doc["checks"]]
        L.append("")
    return L


def _summary(doc: Mapping[str, Any]) -> list[str]:
    """The best method, what is tied with it, the baseline comparison and the CI width."""
    res = doc["results"]
    classes = doc["labels"]["classes"]
    sig = doc["significance"] or {}
    conf = round(100 * doc["protocol"]["confidence"])
    n_test = doc["n_test"]
    L: list[str] = []
    L += ["## Summary", ""]
    if res:
        best = res[0]
        L.append(
            f"- Best macro F1 on the test fold ({n_test} samples, {len(classes)} classes): "
            f"**{best['name']}** "
            f"{best['macro_f1']:.3f} ({conf}% CI {best['ci']['low']:.3f}–{best['ci']['high']:.3f})."
        )
        tied = [n for n, v in (sig.get("vs_best") or {}).items() if v["ci_overlap"]]
        sep = [n for n, v in (sig.get("vs_best") or {}).items() if not v["ci_overlap"]]
        if tied:
            L.append(f"- **Not significantly different from the best** (CIs overlap): {', '.join(tied)}.")
        if sep:
            L.append(f"- Clearly below the best (CIs do not overlap): {', '.join(sep)}.")
        base = sig.get("baseline")
        if base:
            above = [
                n
                for n, v in sig["vs_baseline"].items()
                if v["paired_significant"] and v["paired_delta"]["delta"] > 0
            ]
            below = [
                n
                for n, v in sig["vs_baseline"].items()
                if v["paired_significant"] and v["paired_delta"]["delta"] < 0
            ]
            same = [n for n, v in sig["vs_baseline"].items() if not v["paired_significant"]]
            L.append(
                f"- Against the deployed baseline `{base}` (paired bootstrap of the macro-F1 difference): "
                f"significantly better: {', '.join(above) or 'none'}; significantly worse: "
                f"{', '.join(below) or 'none'}; not significant: {', '.join(same) or 'none'}."
            )
        L.append(
            f"- With {n_test} test samples the {conf}% CIs are about "
            f"±{np.median([(r['ci']['high'] - r['ci']['low']) / 2 for r in res]):.2f} macro F1 wide: "
            "differences smaller than that are not evidence of a better encoder. The CIs resample test "
            "samples only; they do not include the variation from training seeds or from another split."
        )
    L.append("")
    L += rare_and_groups_markdown(doc)
    return L


def _what(doc: Mapping[str, Any]) -> list[str]:
    """The encoders, strategies and protocol."""
    L: list[str] = []
    L += ["## What was evaluated", ""]
    enc_rows = []
    for e in doc["encoders"]:
        c = e.get("cost") or {}
        enc_rows.append(
            [
                e["name"],
                e["kind"],
                f"`{e['spec']}`",
                e.get("ssl_method") or "–",
                e["embed_dim"],
                _si(e["parameters"]),
                _si(c.get("macs_per_pixel")),
                f"{_fmt(c.get('px_per_s'), 0)} ({c.get('backend', 'torch')})",
                (e.get("fingerprint") or "")[:12],
            ]
        )
    if enc_rows:
        L += _table(
            [
                "encoder",
                "kind",
                "source",
                "SSL method",
                "d",
                "params",
                "MACs/px",
                "px/s (CPU, backend)",
                "weights sha256",
            ],
            enc_rows,
        )
        L.append("")
    pr = doc["protocol"]
    ft = pr["finetune"]
    L.append(
        f"- Strategies on every encoder: {', '.join(pr['strategies']) or 'none'}; baselines: "
        f"{', '.join(pr['baselines']) or 'none'}."
    )
    L.append(
        "- `logreg` / `knn` / `catboost`: probes on frozen embeddings, fitted on the train fold. "
        "`finetune`: encoder + linear head trained end to end (AdamW, lr "
        f"{ft['lr']:g}, layer-wise lr decay {ft['layer_decay']:g}, {ft['epochs']} epochs max, "
        f"freeze warm-up {ft['freeze_epochs']} epochs, class weighting `{ft['class_weight']}`, "
        f"balanced sampling {ft['balanced_sampling']}, early stopping on val macro F1 with patience "
        f"{ft['patience']})."
    )
    L.append(
        "- `catboost_features`: CatBoost on hand-crafted per-band percentiles + NDVI phenology "
        "(the deployed WorldCereal-style baseline). `scratch`: the fine-tuning recipe on a randomly "
        f"initialised encoder ({json.dumps(pr.get('random_encoder') or 'Presto architecture')}), no layer "
        "decay."
    )
    L.append(
        f"- Validation fold: {pr['val_used_for']}. Cost: MACs per pixel of the encoder forward pass "
        f"(T={pr['efficiency']['timesteps']}, all tokens present); px/s = best of "
        f"{pr['efficiency']['repeats']} CPU passes of batch {pr['efficiency']['batch_size']} with "
        f"{doc['environment']['torch_threads']} torch thread(s) (probe cost excluded, negligible)."
    )
    L.append("")
    return L


def _data(doc: Mapping[str, Any]) -> list[str]:
    """Sources and the label decisions."""
    classes = doc["labels"]["classes"]
    lab = doc["labels"]["report"]
    sp = doc["split"]
    L: list[str] = []
    d = doc["data"]
    L += ["## Data", ""]
    L += _table(
        ["source", "format", "samples", "labelled"],
        [[f"`{x['path']}`", x["format"], x["samples"], x["labelled"]] for x in d["sources"]],
    )
    L.append("")
    L.append(
        f"{d['n_evaluated']} samples with a class of legend **{lab.get('legend')}** were evaluated "
        f"(T={d['timesteps']} monthly steps); countries {d['countries']}, years {d['years']}."
    )
    L.append("")
    L += ["### Labels", ""]
    L.append(
        f"- Classes (decided on the train + val folds, `min_count={doc['labels']['min_count']}`; samples in "
        "train + val / test): "
        + ", ".join(
            f"{c} ({sp['class_counts']['train'].get(c, 0) + sp['class_counts']['val'].get(c, 0)} / "
            f"{sp['class_counts']['test'].get(c, 0)})"
            for c in classes
        )
        + "."
    )
    L.append(
        f"- Excluded before the split: {lab.get('n_excluded_before_split', 0)} of {lab.get('n_total')} "
        f"samples ({lab.get('n_unlabelled', 0)} unlabelled, ignored classes {lab.get('ignored') or {}})."
    )
    L.append(
        f"- Unknown ewoc codes (policy `{lab.get('unknown_policy')}`): {lab.get('unknown_codes') or 'none'}."
    )
    L.append(
        f"- Folded into `other` (fewer than {doc['labels']['min_count']} training samples): "
        f"{lab.get('folded') or 'none'}."
    )
    L.append(
        f"- Classes absent from training (policy `{lab.get('unseen_policy')}`): "
        f"{lab.get('unseen') or 'none'}."
    )
    L.append("")
    return L


def _split(doc: Mapping[str, Any]) -> list[str]:
    """The split builder, fold sizes, leakage check and class counts per fold."""
    classes = doc["labels"]["classes"]
    sp = doc["split"]
    L: list[str] = []
    L += ["## Split", ""]
    L.append(f"- Builder: `{json.dumps(sp['info'])}`.")
    L.append(f"- Fold sizes: {sp['fold_sizes']}. The split is saved in `split.json`.")
    lk = sp["leakage"]
    status = {True: "**passed**", False: "**FAILED**", None: "not applicable"}[lk["passed"]]
    L.append(f"- Leakage check: {status} — {lk['message']}.")
    L.append("")
    folds = ["train", "val", "test"]
    rows = [[c, *[sp["class_counts"][f].get(c, 0) for f in folds]] for c in [*classes, "(unseen class)"]]
    L += _table(["class", *folds], rows)
    L.append("")
    return L


def _results(doc: Mapping[str, Any]) -> list[str]:
    """The ranked results, the cost of a map, robustness, agreement and significance tests."""
    res = doc["results"]
    sig = doc["significance"] or {}
    conf = round(100 * doc["protocol"]["confidence"])
    L: list[str] = []
    L += ["## Results", ""]
    rows = []
    for i, r in enumerate(res, 1):
        c = r.get("cost") or {}
        vs = (sig.get("vs_best") or {}).get(r["name"])
        mark = "best" if i == 1 else ("≈ best (CI overlap)" if vs and vs["ci_overlap"] else "below")
        rows.append(
            [
                i,
                r["name"],
                f"**{r['macro_f1']:.3f}**",
                f"{r['ci']['low']:.3f}–{r['ci']['high']:.3f}",
                f"{r['accuracy']:.3f}",
                _si(c.get("macs_per_pixel")),
                _fmt(c.get("px_per_s"), 0),
                _fmt(r["fit_seconds"], 1),
                mark,
            ]
        )
    L += _table(
        ["#", "method", "macro F1", f"{conf}% CI", "accuracy", "MACs/px", "px/s", "fit s", "vs best"], rows
    )
    L.append("")
    threads = doc["environment"].get("torch_threads", 1)
    costs = {e["name"]: (e.get("cost") or {}).get("px_per_s") for e in doc["encoders"]}
    if any(costs.values()):
        L += ["### Cost of a map", ""]
        L.append(
            f"CPU core-hours to embed every 10 m pixel of an area at the measured speed ({threads} "
            "thread(s), eager PyTorch; `experiments/benchmarks/vs_presto.py` measures the other backends): "
            "1 km² = 10,000 px, Kenya = 5.8e9 px."
        )
        L.append("")
        L += _table(
            ["encoder", "px/s", "core-s per km²", "core-hours, Kenya"],
            [
                [n, _fmt(v, 0), _fmt(1e4 / v * threads, 2), _fmt(map_core_hours(5.8e9, v, threads), 0)]
                for n, v in costs.items()
                if v
            ],
        )
        L.append("")
    L += robustness_markdown(doc.get("robustness"))
    L += agreement_markdown(doc.get("agreement"))
    if sig.get("vs_best"):
        L += ["### Which differences are significant", ""]
        L.append(
            f"Two tests against the best method ({sig['best']}): whether the {conf}% bootstrap CIs overlap "
            "(conservative), and a paired bootstrap of the difference on the same resampled test "
            "samples (a difference is significant when its CI excludes 0)."
        )
        L.append("")
        rows = [_delta_row(n, v, with_overlap=True) for n, v in sig["vs_best"].items()]
        L += _table(["method", "Δ macro F1 vs best", f"paired {conf}% CI", "CIs overlap", "verdict"], rows)
        L.append("")
        if sig.get("baseline") and sig.get("vs_baseline"):
            rows = [_delta_row(n, v, with_overlap=False) for n, v in sig["vs_baseline"].items()]
            L.append(f"Against the deployed baseline `{sig['baseline']}`:")
            L.append("")
            L += _table(["method", "Δ macro F1 vs baseline", f"paired {conf}% CI", "verdict"], rows)
            L.append("")
    return L


def _per_class(doc: Mapping[str, Any]) -> list[str]:
    """Per-class F1 (absent classes named) and the plots."""
    res = doc["results"]
    classes = doc["labels"]["classes"]
    L: list[str] = []
    L += ["### Per-class F1", ""]
    support = [res[0]["metrics"]["per_class"][c]["support"] for c in classes] if res else []
    rows = [
        [
            r["name"],
            *[
                f"{r['metrics']['per_class'][c]['f1']:.2f}" if n else "absent"
                for c, n in zip(classes, support)
            ],
        ]
        for r in res
    ]
    L += _table(["method", *[f"{c} (n={n})" for c, n in zip(classes, support)]], rows)
    L.append("")
    return L + _images(("per-class F1", "per_class_f1"), ("confusion matrices", "confusion"))


def _per_group(doc: Mapping[str, Any]) -> list[str]:
    """Macro F1 per group of the test fold."""
    res = doc["results"]
    L: list[str] = []
    keys = [k for k in doc["protocol"]["group_keys"] if res and k in res[0]["per_group"]]
    if keys:
        L += ["### Per group (test fold)", ""]
        for key in keys:
            groups = sorted({g for r in res for g in r["per_group"].get(key, {})})
            ns = {
                g: next(r["per_group"][key][g]["n"] for r in res if g in r["per_group"][key]) for g in groups
            }
            rows = [
                [r["name"], *[_fmt((r["per_group"][key].get(g) or {}).get("macro_f1")) for g in groups]]
                for r in res
            ]
            L.append(f"Macro F1 per `{key}`:")
            L.append("")
            L += _table(["method", *[f"{g} (n={ns[g]})" for g in groups]], rows)
            L.append("")
    return L


def _efficiency(doc: Mapping[str, Any]) -> list[str]:
    """The efficiency frontier plots."""
    pictures = (
        ("macro F1 vs MACs per pixel", "frontier_macs"),
        ("macro F1 vs pixels per second", "frontier_px_per_s"),
    )
    return ["### Efficiency", "", *_images(*pictures)]


def _finetune_runs(doc: Mapping[str, Any]) -> list[str]:
    """Fine-tuning runs, saved heads, warnings and how to reproduce."""
    res = doc["results"]
    L: list[str] = []
    fts = [r for r in res if r.get("finetune")]
    if fts:
        L += ["### Fine-tuning runs", ""]
        rows = [
            [
                r["name"],
                r["finetune"]["n_train"],
                r["finetune"]["n_val"],
                r["finetune"]["epochs_run"],
                r["finetune"]["best_epoch"],
                _fmt(r["finetune"]["best_val_macro_f1"]),
                "yes" if r["finetune"]["stopped_early"] else "no",
                _fmt(r["finetune"]["seconds"], 1),
            ]
            for r in fts
        ]
        L += _table(
            [
                "method",
                "train",
                "val",
                "epochs run",
                "best epoch",
                "best val macro F1",
                "stopped early",
                "seconds",
            ],
            rows,
        )
        L.append("")
    if doc.get("heads"):
        L += ["### Saved heads (for `cropssl-predict`)", ""]
        L += [f"- {n}: `{p}`" for n, p in doc["heads"].items()]
        L.append("")
    L += ["## Warnings", ""]
    L += [f"- {w}" for w in doc.get("warnings") or []] or ["- none"]
    L.append("")
    L += ["## Reproduce", ""]
    t = doc["timings"]
    L.append(
        f"Wall time {t.get('total_s', 0):.0f} s on {doc['environment']['processor']} "
        f"({doc['environment']['torch_threads']} torch thread(s)), torch {doc['environment']['torch']}. "
        "Full config and all numbers: `results.json`; test predictions: `predictions.parquet`."
    )
    if doc.get("command"):
        L += ["", "```", doc["command"], "```"]
    L.append("")
    return L
