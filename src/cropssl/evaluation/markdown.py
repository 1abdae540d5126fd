"""The markdown of an evaluation report (``report.md``), rendered from the content of ``results.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.evaluation.encoders import map_core_hours
from cropssl.evaluation.markdown_deploy import (
    agreement_markdown,
    fmt,
    md_table,
    rare_and_groups_markdown,
    robustness_markdown,
)
from cropssl.evaluation.plots import PLOTS


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
                f"{fmt(c.get('px_per_s'), 0)} ({c.get('backend', 'torch')}"
                + ("; the probes read its embeddings)" if c.get("embedded_by", "torch") != "torch" else ")"),
                (e.get("fingerprint") or "")[:12],
            ]
        )
    if enc_rows:
        L += md_table(
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
    L += md_table(
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
    L += md_table(["class", *folds], rows)
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
                fmt(c.get("px_per_s"), 0),
                fmt(r["fit_seconds"], 1),
                mark,
            ]
        )
    L += md_table(
        ["#", "method", "macro F1", f"{conf}% CI", "accuracy", "MACs/px", "px/s", "fit s", "vs best"], rows
    )
    L.append("")
    threads = doc["environment"].get("torch_threads", 1)
    costs = {e["name"]: (e.get("cost") or {}).get("px_per_s") for e in doc["encoders"]}
    backends = sorted({(e.get("cost") or {}).get("backend", "torch") for e in doc["encoders"]} - {"torch"})
    if any(costs.values()):
        L += ["### Cost of a map", ""]
        how = "eager PyTorch" if not backends else f"backend {', '.join(backends)} for export directories"
        L.append(
            f"CPU core-hours to embed every 10 m pixel of an area at the measured speed ({threads} "
            f"thread(s), {how}; `experiments/benchmarks/vs_presto.py` measures the other backends): "
            "1 km² = 10,000 px, Kenya = 5.8e9 px."
        )
        L.append("")
        L += md_table(
            ["encoder", "px/s", "core-s per km²", "core-hours, Kenya"],
            [
                [n, fmt(v, 0), fmt(1e4 / v * threads, 2), fmt(map_core_hours(5.8e9, v, threads), 0)]
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
        L += md_table(["method", "Δ macro F1 vs best", f"paired {conf}% CI", "CIs overlap", "verdict"], rows)
        L.append("")
        if sig.get("baseline") and sig.get("vs_baseline"):
            rows = [_delta_row(n, v, with_overlap=False) for n, v in sig["vs_baseline"].items()]
            L.append(f"Against the deployed baseline `{sig['baseline']}`:")
            L.append("")
            L += md_table(["method", "Δ macro F1 vs baseline", f"paired {conf}% CI", "verdict"], rows)
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
    L += md_table(["method", *[f"{c} (n={n})" for c, n in zip(classes, support)]], rows)
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
                [r["name"], *[fmt((r["per_group"][key].get(g) or {}).get("macro_f1")) for g in groups]]
                for r in res
            ]
            L.append(f"Macro F1 per `{key}`:")
            L.append("")
            L += md_table(["method", *[f"{g} (n={ns[g]})" for g in groups]], rows)
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
                fmt(r["finetune"]["best_val_macro_f1"]),
                "yes" if r["finetune"]["stopped_early"] else "no",
                fmt(r["finetune"]["seconds"], 1),
            ]
            for r in fts
        ]
        L += md_table(
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
