"""What continual pre-training from Presto buys on a region without labels, and what it forgets.

One command::

    python experiments/continual/run.py --out experiments/continual/results

The operational case: the imagery of the target region is there, its labels are not. Every run starts from
the published Presto weights (``start=from_weights start.source=presto``) and continues on **unlabelled**
real pixels for the same budget; the runs differ in their guardrails:

* ``mae lr 1e-3``: MAE at the default learning rate, re-warmed (no guardrail);
* ``mae lr 1e-4``: a ten times lower learning rate;
* ``mae lr 1e-4 + layer decay``: lower blocks learn slower still (``optimizer.layer_decay=0.5``);
* ``mae lr 1e-4 + L2-SP``: a pull towards Presto's weights (``method.anchor``);
* ``mae lr 1e-4 + replay``: ``data=mix`` with 30 % synthetic (generic) pixels replayed;
* ``mae lr 1e-4 + warm-up``: the encoder fixed for 100 steps while the new decoder learns
  (``callbacks=continual``);
* the best other family of ``experiments/ssl_quality`` (``--other``) with the lower learning rate;
* ``mae_lr1e-4_all`` (only with ``--only mae_lr1e-4_all``): from Presto at lr 1e-4 on every bundled real
  pixel (East Africa's too, unlabelled) mixed half and half with synthetic ones, as the scratch run below:
  the operational case for both held-out regions;
* ``mae_scratch`` (only with ``--only mae_scratch``; ``mae_scratch_seed1`` is its second seed): no Presto
  at all, MAE from random weights at the largest budget that fits, on every bundled real pixel (East
  Africa's too, unlabelled: the operational case) mixed half and half with synthetic ones; evaluated
  next to a random-init encoder of its size.

Data: the continued runs see the French pixels and the Belgian cube, never the East-African file (that one
measures **forgetting**: a region and year the continued run did not see). Evaluation
(``cropssl-evaluate``, frozen logreg / kNN / CatBoost probes, against frozen Presto and the CatBoost feature
baseline, same pixels for all): France with an H3 cell held out (a region the runs saw unlabelled),
East Africa with South Sudan held out (not seen), and a year split (2017 East Africa -> 2022 France,
LANDCOVER10; confounded with the region by construction, as the report says).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
W = ROOT.parent / "shared" / "data" / "worldcereal"
FRA, EA, BEL = (
    W / "2022_FRA_LPIS_month.geoparquet",
    W / "2017_east_africa_public_month_wide.parquet",
    W / "2021_BEL_31UFS_month_cube_100x100.nc",
)

LOW = ("method.optimizer.lr=1e-4",)
VARIANTS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # name: (method, overrides, data: "seen" = France + Belgium, "replay" = that + 30 % synthetic)
    "mae_lr1e-3": ("mae", (), "seen"),
    "mae_lr1e-4": ("mae", LOW, "seen"),
    "mae_lr1e-4_layerdecay": ("mae", (*LOW, "method.optimizer.layer_decay=0.5"), "seen"),
    "mae_lr1e-4_l2sp": ("mae", (*LOW, "method.anchor=1.0"), "seen"),
    "mae_lr1e-4_replay": ("mae", LOW, "replay"),
    # the encoder held still for the first 100 steps while the new decoder learns (cropssl.callbacks.warmup)
    "mae_lr1e-4_warmup": ("mae", (*LOW, "callbacks=continual"), "seen"),
    # checkpoints hold an EMA of the encoder's weights, started at Presto's (cropssl.callbacks.weight_ema)
    "mae_lr1e-4_ema": ("mae", (*LOW, "callbacks=ema"), "seen"),
}
#: Run only when named in ``--only``: from scratch, all real pixels + synthetic half and half ("all").
FRESH = ("start=fresh", "method.schedule.warmup_steps=200")
SCRATCH = {"mae_scratch": ("mae", FRESH, "all"), "mae_scratch_seed1": ("mae", (*FRESH, "seed=1"), "all")}
#: Run only when named in ``--only``: from Presto on every real pixel (East Africa's too, unlabelled) with
#: replay, the operational case for both held-out regions (nothing left unseen to measure forgetting).
ALL_REAL = {"mae_lr1e-4_all": ("mae", LOW, "all")}
SPLITS = {
    "fra_geo_h3": (
        [FRA],
        ["legend=LANDCOVER10", "min_count=15", "split=geographic", "split.key=h3_l3_cell",
         "split.test_groups=[831e94fffffffff]"],
    ),
    "ea_geo_ssd": (
        [EA],
        ["legend=CROPTYPE24", "min_count=10", "split=geographic", "split.key=country",
         "split.test_groups=[SSD]"],
    ),
    "year_2017_to_2022": (
        [EA, FRA],
        ["legend=LANDCOVER10", "min_count=10", "split=temporal", "split.test_years=[2022]"],
    ),
}  # fmt: skip


def run(cmd: list[str], log: Path, threads: int) -> None:
    """Run a command, its output to ``log``; raise with the log's tail on failure."""
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": str(threads)}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed; see {log}:\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> None:
    """Shard, continue pre-training every variant, evaluate, write results.json and table.md."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="experiments/continual/results")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--other", default=None, help="second family (default: best of experiments/ssl_quality)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated subset of the variants")
    args = p.parse_args(argv)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    t0 = time.time()
    variants = {**VARIANTS, **({**SCRATCH, **ALL_REAL} if args.only else {})}
    other = args.other or best_other_family()
    if other:
        variants[f"{other}_lr1e-4"] = (other, LOW, "seen")
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    # shard only what the selected variants read: France + Belgium, or every real file ("all")
    shards, synth, every = out / "data" / "fra_bel", out / "data" / "synth", out / "data" / "all"
    sources = {source for _, _, source in variants.values()}
    real_sets = [(shards, [FRA, BEL], "shard.log")] if sources - {"all"} else []
    real_sets += [(every, [FRA, BEL, EA], "shard_all.log")] if "all" in sources else []
    for target, files, log in real_sets:
        if not (target / "manifest.json").exists():
            run([py, "-m", "cropssl.cli.shard", *map(str, files), "--out", str(target), "--overwrite"],
                out / log, args.threads)  # fmt: skip
    if sources - {"seen"} and not (synth / "manifest.json").exists():
        run([py, "-m", "cropssl.cli.synth", "--out", str(synth), "--pixels", "20000", "--overwrite"],
            out / "synth.log", args.threads)  # fmt: skip
    ckpts = {}
    for name, (method, overrides, source) in variants.items():
        run_dir = out / "runs" / name
        ckpts[name] = run_dir / "checkpoints" / "last.ckpt"
        if ckpts[name].exists() and (run_dir / "summary.json").exists():
            continue
        real, share = (every, 0.5) if source == "all" else (shards, 0.7)
        data = (
            ["data=mix", f"data.train.0.shards={real}", f"data.train.0.weight={share}",
             f"data.train.1.shards={synth}", f"data.train.1.weight={1 - share:.1f}"]
            if source != "seen" else [f"data.train={shards}"]
        )  # fmt: skip
        start = [] if "start=fresh" in overrides else ["start=from_weights", "start.source=presto"]
        cmd = [py, "-m", "cropssl.cli.pretrain", f"method={method}", *data, *start,
               f"trainer.max_steps={args.steps}", f"data.batch_size={args.batch_size}",
               f"run_dir={run_dir}", f"name=continual_{name}", "trainer.enable_progress_bar=false",
               "trainer.enable_model_summary=false", *overrides]  # fmt: skip
        print(f"continuing {name}", flush=True)
        run(cmd, out / f"pretrain_{name}.log", args.threads)
    random = ["random"] if set(SCRATCH) & set(ckpts) else []  # the scratch run's "no pre-training" twin
    encoders = ["presto", *random, *(str(c) for c in ckpts.values())]
    tag = "" if not args.only else "_" + args.only.replace(",", "+")  # a subset gets its own reports
    enc_arg = "encoders=[" + ",".join(encoders) + "]"
    reports: dict[str, Any] = {}
    for split, (files, overrides) in SPLITS.items():
        target = out / f"eval{tag}" / split
        if not (target / "results.json").exists():
            print(f"evaluating {split}", flush=True)
            run([py, "-m", "cropssl.cli.evaluate", enc_arg, "datasets=[" + ",".join(map(str, files)) + "]",
                 *overrides, "strategies=[logreg,knn,catboost]", "baselines=[catboost_features]",
                 f"threads={args.threads}", f"out={target}", "bootstrap.n_boot=500"],
                out / f"eval{tag}_{split}.log", args.threads)  # fmt: skip
        doc = json.loads((target / "results.json").read_text())
        reports[split] = {r["name"]: (r["macro_f1"], r.get("ci")) for r in doc["results"]}
    table = table_md(reports)
    if args.only:  # a subset: each run against Presto (a scratch run also against random init), per probe
        names = [f"{n}/last" for n in ckpts]
        pairs = [(n, "random") for n in names if random] + [(n, "presto") for n in names]
        table += "\n" + paired_md(out / f"eval{tag}", pairs)
    (out / f"table{tag}.md").write_text(table)
    summary = {"command": " ".join(["python", "experiments/continual/run.py", *(argv or sys.argv[1:])]),
               "args": vars(args), "variants": {k: list(v[1]) for k, v in variants.items()},
               "results": reports, "wall_s": round(time.time() - t0)}  # fmt: skip
    (out / f"results{tag}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(table)


def best_other_family() -> str | None:
    """The non-MAE family with the largest held-out-region linear-probe gain in experiments/ssl_quality."""
    path = ROOT / "experiments" / "ssl_quality" / "results" / "results.json"
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    split = next(k for k in doc["results"]["splits"] if k.startswith("held-out"))
    encs = doc["results"]["splits"][split]["encoders"]
    gains = {
        name: sum(r["logreg"]["vs_random"]["delta"] for r in res) / len(res)
        for name, res in encs.items()
        if name not in ("raw features", "random init") and not name.startswith("mae")
    }
    return max(gains, key=gains.get) if gains else None


def paired_md(eval_dir: Path, pairs: list[tuple[str, str]], n_boot: int = 1000) -> str:
    """Paired-bootstrap macro-F1 differences, encoder a vs b with the same probe, per split's test pixels."""
    import numpy as np
    import pandas as pd

    from cropssl.evaluation.metrics import paired_bootstrap_delta

    lines = ["| a vs b (same probe) | " + " | ".join(SPLITS) + " |", "| --- |" + " --- |" * len(SPLITS)]
    cells: dict[str, dict[str, str]] = {}
    for split in SPLITS:
        pred = pd.read_parquet(eval_dir / split / "predictions.parquet")
        classes = json.loads((eval_dir / split / "results.json").read_text())["labels"]["classes"]
        index = {c: i for i, c in enumerate(classes)}
        y = pred["true"].map(index).to_numpy(np.int64)
        for a, b in pairs:
            for probe in ("logreg", "knn", "catboost"):
                pa, pb = (pred[f"{e} + {probe}"].map(index).to_numpy(np.int64) for e in (a, b))
                d = paired_bootstrap_delta(y, pa, pb, len(classes), n_boot=n_boot)
                mark = "✓" if d["low"] > 0 else "✗" if d["high"] < 0 else "~"
                key = f"{a.removesuffix('/last')} vs {b} + {probe}"
                ci = f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] {mark}"
                cells.setdefault(key, {})[split] = ci
    lines += [f"| {k} | " + " | ".join(v[s] for s in SPLITS) + " |" for k, v in cells.items()]
    return "\n".join(lines) + "\n"


def table_md(reports: dict[str, Any]) -> str:
    """Macro F1 (95 % CI) per encoder x strategy (rows) and split (columns)."""
    rows: dict[str, dict[str, str]] = {}
    for split, res in reports.items():
        for name, (f1, ci) in res.items():
            enc, _, strat = name.partition(" + ")
            key = f"{enc.removesuffix('/last')} + {strat}" if strat else enc
            cell = f"{f1:.3f}" + (f" ({ci['low']:.2f}-{ci['high']:.2f})" if ci else "")
            rows.setdefault(key, {})[split] = cell
    splits = list(reports)
    lines = ["| encoder + probe | " + " | ".join(splits) + " |", "| --- |" + " --- |" * len(splits)]
    for key in sorted(rows):
        lines.append(f"| {key} | " + " | ".join(rows[key].get(s, "") for s in splits) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
