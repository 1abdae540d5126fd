"""Does pre-training learn? Every SSL family against its random-init encoder, on data with known labels.

One command::

    python experiments/ssl_quality/run.py --out experiments/ssl_quality/results

Protocol (defaults; every number is a flag):

* **data**: synthetic pixels (``cropssl.data.synth``, calibrated to the real files' class overlap):
  pre-training on 4 regions (north_europe, mediterranean, us_midwest, south_america), unlabelled use;
  a separate labelled evaluation set (other seed) over all 5 regions. ``--data mix`` pre-trains on the
  bundled real pixels mixed with synthetic ones and evaluates on the real labelled pixels (the family
  comparison, see the README);
* **pre-training**: each method of ``--methods`` for the same ``--steps`` x ``--batch-size`` with the same
  encoder (``--encoder`` overrides), its paper defaults otherwise, online kNN / linear probes every
  ``--probe-every`` steps (the curves), ``--seeds`` seeds;
* **evaluation**: frozen embeddings, a standardised logistic regression and a kNN (k=20) on (a) a
  stratified random split of the pre-training regions' labelled pixels and (b) a held-out region (trained
  on the 4 others, classes it shares with them); against a random-init encoder of the same architecture
  and a probe on the raw (normalised, flattened) inputs, on exactly the same pixels; paired bootstrap of
  the macro-F1 difference to the random-init encoder.

Writes ``results.json``, ``README.md`` (tables) and ``curves.png`` (online probe F1 vs step per family).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("mae", "simclr", "mocov3", "byol", "dino", "barlow", "vicreg")
PRETRAIN_REGIONS = ("north_europe", "mediterranean", "us_midwest", "south_america")
HELD_OUT = "east_africa"
SMALL_ENCODER = ("encoder.d=64", "encoder.heads=4", "encoder.depth=2", "encoder.mlp_ratio=4")


# ---------------------------------------------------------------------------------------------- data
def make_data(out: Path, kind: str, pixels: int, eval_pixels: int, seed: int) -> tuple[Any, Path, str]:
    """Pre-training spec (Hydra ``data.train`` value), labelled shard dir, and the held-out group key."""
    from cropssl.data.shard_writer import write_shards
    from cropssl.data.synth import generate

    out.mkdir(parents=True, exist_ok=True)
    if kind == "synth":
        pre, lab = out / "pretrain", out / "labelled"
        if not (pre / "manifest.json").exists():
            s = generate(pixels, regions=list(PRETRAIN_REGIONS), seed=seed)
            write_shards(s, pre, records_per_shard=4, overwrite=True)
        if not (lab / "manifest.json").exists():
            write_shards(generate(eval_pixels, seed=seed + 1000), lab, records_per_shard=4, overwrite=True)
        return str(pre), lab, "country"
    from cropssl.data.build import shard_files

    real = ROOT.parent / "shared" / "data" / "worldcereal"
    files = [
        real / f for f in ("2022_FRA_LPIS_month.geoparquet", "2017_east_africa_public_month_wide.parquet")
    ]
    cube = real / "2021_BEL_31UFS_month_cube_100x100.nc"
    pre_real, syn, lab = out / "real", out / "synth", out / "labelled"
    if not (pre_real / "manifest.json").exists():
        shard_files([*files, cube], pre_real, log=lambda _: None, overwrite=True)
    if not (syn / "manifest.json").exists():
        write_shards(generate(pixels, seed=seed), syn, records_per_shard=4, overwrite=True)
    if not (lab / "manifest.json").exists():
        shard_files(files, lab, labelled_only=True, log=lambda _: None, overwrite=True)
    mix = [{"shards": str(pre_real), "weight": 0.5}, {"shards": str(syn), "weight": 0.5}]
    return mix, lab, "country"


# ---------------------------------------------------------------------------------------------- training
def pretrain(
    method: str,
    data: Any,
    labelled: Path,
    run: Path,
    args: argparse.Namespace,
    seed: int,
    extra: tuple[str, ...] = (),
) -> float:
    """Run cropssl-pretrain in a subprocess; returns its wall time (s)."""
    if (run / "summary.json").exists():
        return float(json.loads((run / "summary.json").read_text()).get("wall_time_s", 0.0))
    if isinstance(data, list):
        data_args = [
            "data=mix",
            *(f"data.train.{i}.{k}={v}" for i, d in enumerate(data) for k, v in d.items()),
        ]
    else:
        data_args = [f"data.train={data}"]
    cmd = [
        sys.executable, "-m", "cropssl.cli.pretrain", f"method={method}", *data_args,
        *args.encoder, "callbacks=monitors", f"callbacks.probe.labelled_shards={labelled}",
        f"callbacks.probe.every_n_steps={args.probe_every}",
        f"callbacks.health.every_n_steps={args.probe_every}",
        f"callbacks.checkpoint.every_n_train_steps={args.steps}", f"trainer.max_steps={args.steps}",
        f"data.batch_size={args.batch_size}", f"data.steps_per_epoch={max(args.steps // 4, 1)}",
        f"seed={seed}", f"run_dir={run}", f"name=ssl_quality_{method}", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", *args.override, *extra,
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": str(args.threads)}
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"pre-training {method} failed:\n{proc.stderr[-3000:]}")
    return time.time() - t0


# ---------------------------------------------------------------------------------------------- evaluation
def raw_features(samples: Any) -> np.ndarray:
    """Normalised inputs, missing = 0, flattened (the probe-on-raw-features baseline)."""
    from cropssl.schema import normalize

    return normalize(samples.x, samples.mask).reshape(len(samples), -1)


def splits(
    samples: Any, key: str, held_out: str | None, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (train_idx, test_idx)}``: a stratified random split and, if given, a held-out group."""
    from sklearn.model_selection import train_test_split

    y = samples.label
    group = np.asarray(samples.meta[key]).astype(str)
    inside = np.flatnonzero(group != held_out) if held_out else np.arange(len(y))
    # stratified by class; classes with a single sample (the real files' rare ewoc codes) share a stratum
    values, counts = np.unique(y[inside], return_counts=True)
    strata = np.where(np.isin(y[inside], values[counts < 2]), -2, y[inside])
    tr, te = train_test_split(inside, test_size=0.3, random_state=seed, stratify=strata)
    out = {"random": (tr, te)}
    if held_out and (group == held_out).any():
        test = np.flatnonzero(group == held_out)
        shared = np.isin(y[test], np.unique(y[inside]))
        out[f"held-out {held_out}"] = (inside, test[shared])
    return out


def probe_scores(X: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, seed: int) -> dict[str, Any]:
    """Macro F1 (over the test fold's classes) and test predictions of a logistic regression and a kNN."""
    from sklearn.metrics import f1_score

    from cropssl.evaluation.probes import fit_predict

    classes = np.unique(y[tr])
    yi = np.searchsorted(classes, y)
    keep = np.isin(y[te], classes)
    te = te[keep]
    out = {}
    for kind, kw in (("logreg", {"C": 1.0, "max_iter": 2000}), ("knn", {"k": 20})):
        pred, _ = fit_predict(kind, X[tr], yi[tr], X[te], n_classes=len(classes), seed=seed, **kw)
        f1 = f1_score(yi[te], pred, labels=np.unique(yi[te]), average="macro", zero_division=0)
        out[kind] = {"macro_f1": float(f1), "pred": pred.tolist(), "y": yi[te].tolist()}
    return out


def evaluate_encoders(
    runs: dict[str, list[Path]], labelled: Path, key: str, held_out: str | None, encoder_cfg: dict, seed: int
) -> dict[str, Any]:
    """Probe results per encoder (each pre-training seed), random-init encoders and raw features."""
    import torch

    from cropssl.data.shards import read_shards
    from cropssl.encoder import PixelTimeSeriesEncoder
    from cropssl.evaluation.encoders import embed_samples, load_checkpoint_encoder

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    samples = read_shards(labelled)
    samples = samples.select(samples.label >= 0)
    sp = splits(samples, key, held_out, seed)
    features: dict[str, list[np.ndarray]] = {"raw features": [raw_features(samples)]}
    for s, _ in enumerate(next(iter(runs.values()), [])):
        torch.manual_seed(s)
        features.setdefault("random init", []).append(
            embed_samples(PixelTimeSeriesEncoder(**encoder_cfg).eval(), samples)
        )
    for method, paths in runs.items():
        encoders = [load_checkpoint_encoder(p / "checkpoints" / "last.ckpt")[0] for p in paths]
        features[method] = [embed_samples(e, samples) for e in encoders]
    results: dict[str, Any] = {"n_samples": len(samples), "splits": {}}
    for name, (tr, te) in sp.items():
        results["splits"][name] = {"n_train": len(tr), "n_test": len(te), "encoders": {}}
        for enc, feats in features.items():
            results["splits"][name]["encoders"][enc] = [
                probe_scores(X, samples.label, tr, te, seed) for X in feats
            ]
    return results


def macro_f1_resampled(y: np.ndarray, pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Macro F1 over the classes of ``y`` for each row of resampled indices ``idx [B, n]`` (vectorised)."""
    labels = np.unique(y)
    k = int(max(y.max(), pred.max())) + 1
    b = len(idx)
    codes = (y[idx] * k + pred[idx]) + (np.arange(b) * k * k)[:, None]
    cm = np.bincount(codes.ravel(), minlength=b * k * k).reshape(b, k, k)
    tp = cm[:, labels, labels]
    fn = cm[:, labels, :].sum(2) - tp
    fp = cm[:, :, labels].sum(1) - tp
    return (2 * tp / np.maximum(2 * tp + fp + fn, 1)).mean(1)


def paired_bootstrap(y: Any, a: Any, b: Any, n_boot: int, seed: int) -> dict[str, float]:
    """Percentile 95 % CI of macro-F1(a) - macro-F1(b), both scored on the same resampled test pixels."""
    y, a, b = (np.asarray(v, np.int64) for v in (y, a, b))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    d = macro_f1_resampled(y, a, idx) - macro_f1_resampled(y, b, idx)
    full = np.arange(len(y))[None]
    delta = float(macro_f1_resampled(y, a, full)[0] - macro_f1_resampled(y, b, full)[0])
    return {"delta": delta, "low": float(np.quantile(d, 0.025)), "high": float(np.quantile(d, 0.975))}


def paired_deltas(results: dict[str, Any], n_boot: int, seed: int) -> None:
    """Add, per split, encoder and probe, the paired-bootstrap CI of F1(encoder) - F1(random init)."""
    for sp in results["splits"].values():
        base = sp["encoders"]["random init"]
        for name, per_seed in sp["encoders"].items():
            if name in ("random init", "raw features"):
                continue
            for i, res in enumerate(per_seed):
                ref = base[min(i, len(base) - 1)]
                for kind in ("logreg", "knn"):
                    r = res[kind]
                    r["vs_random"] = paired_bootstrap(r["y"], r["pred"], ref[kind]["pred"], n_boot, seed)


# ---------------------------------------------------------------------------------------------- report
def curves(runs: dict[str, list[Path]], png: Path) -> dict[str, Any]:
    """Online probe macro-F1 vs step per family (mean over seeds), plotted; returns the series."""
    import pandas as pd

    series: dict[str, Any] = {}
    for method, paths in runs.items():
        for col in ("monitor/linear_f1", "monitor/knn_f1"):
            frames = []
            for p in paths:
                df = pd.read_csv(p / "metrics.csv")
                if col in df:
                    frames.append(df[["step", col]].dropna().set_index("step")[col])
            if frames:
                mean = pd.concat(frames, axis=1).mean(axis=1)
                series.setdefault(method, {})[col] = {int(k): float(v) for k, v in mean.items()}
    plot_curves(series, png)
    return series


def plot_curves(series: dict[str, Any], png: Path) -> None:
    """Plot ``{method: {column: {step: F1}}}`` (steps may be JSON strings) as two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method, cols in series.items():
        for ax, col in zip(axes, ("monitor/linear_f1", "monitor/knn_f1"), strict=True):
            if col in cols:
                steps = sorted(cols[col], key=int)
                ax.plot(
                    [int(k) for k in steps], [cols[col][k] for k in steps], marker="o", ms=3, label=method
                )
    for ax, title in zip(axes, ("online linear probe", "online kNN"), strict=True):
        ax.set_title(f"{title} (macro F1, mean over seeds)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _cell(per_seed: list[dict[str, Any]], kind: str) -> str:
    f1 = np.array([r[kind]["macro_f1"] for r in per_seed])
    txt = f"{f1.mean():.3f}" + (f" ± {f1.std(ddof=1):.3f}" if len(f1) > 1 else "")
    d = [r[kind].get("vs_random") for r in per_seed]
    if d[0] is not None:
        lo, hi = min(x["low"] for x in d), max(x["high"] for x in d)
        mark = " ✓" if all(x["low"] > 0 for x in d) else (" ✗" if any(x["high"] < 0 for x in d) else " ~")
        txt += f" (Δ {np.mean([x['delta'] for x in d]):+.3f} [{lo:+.3f}, {hi:+.3f}]{mark})"
    return txt


def markdown(doc: dict[str, Any]) -> str:
    """The results tables."""
    lines = [
        "| encoder | "
        + " | ".join(f"{s} {k}" for s in doc["results"]["splits"] for k in ("logreg", "kNN"))
        + " |",
        "| --- |" + " --- |" * (2 * len(doc["results"]["splits"])),
    ]
    names = list(next(iter(doc["results"]["splits"].values()))["encoders"])
    for name in names:
        cells = []
        for sp in doc["results"]["splits"].values():
            cells += [_cell(sp["encoders"][name], "logreg"), _cell(sp["encoders"][name], "knn")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sizes = ", ".join(
        f"{n}: {s['n_train']} train / {s['n_test']} test" for n, s in doc["results"]["splits"].items()
    )
    return "\n".join(lines) + f"\n\nPixels: {sizes}.\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the protocol; returns the results document."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="experiments/ssl_quality/results")
    p.add_argument("--data", choices=["synth", "mix"], default="synth")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--probe-every", type=int, default=100)
    p.add_argument("--seeds", default="0")
    p.add_argument("--pixels", type=int, default=40_000, help="synthetic pre-training pixels")
    p.add_argument("--eval-pixels", type=int, default=5_000, help="labelled synthetic evaluation pixels")
    p.add_argument("--encoder", nargs="*", default=list(SMALL_ENCODER), help="encoder overrides")
    p.add_argument("--override", nargs="*", default=[], help="more cropssl-pretrain overrides")
    p.add_argument(
        "--variant",
        nargs="*",
        default=[],
        help="extra runs NAME=METHOD:override,override (e.g. mae-presto-decoder=mae:method.decoder_dim=128)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-boot", type=int, default=1000)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in str(args.seeds).split(",")]
    t0 = time.time()
    data, labelled, key = make_data(out / "data", args.data, args.pixels, args.eval_pixels, seed=0)
    held_out = HELD_OUT if args.data == "synth" else "SSD"
    runs: dict[str, list[Path]] = {}
    wall: dict[str, list[float]] = {}
    todo = [(m, m, ()) for m in args.methods.split(",") if m]
    for v in args.variant:
        name, spec = v.split("=", 1)
        method, _, ovr = spec.partition(":")
        # commas inside [...] belong to a list value (encoder.groups=[S1,S2_RGB])
        todo.append((name, method, tuple(o for o in re.split(r",(?![^\[]*\])", ovr) if o)))
    for name, method, extra in todo:
        for seed in seeds:
            run = out / "runs" / f"{name}_seed{seed}"
            wall.setdefault(name, []).append(pretrain(method, data, labelled, run, args, seed, extra))
            runs.setdefault(name, []).append(run)
            print(f"{name} seed {seed}: pre-trained in {wall[name][-1]:.0f} s", flush=True)
    enc_cfg = {"d": 128, "depth": 2, "heads": 8, "mlp_ratio": 4.0}
    for o in args.encoder:
        k, v = o.removeprefix("encoder.").split("=", 1)
        enc_cfg[k] = float(v) if "." in v else int(v)
    results = evaluate_encoders(runs, labelled, key, held_out, enc_cfg, seed=0)
    paired_deltas(results, args.n_boot, seed=0)
    doc = {
        "command": "python experiments/ssl_quality/run.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": vars(args),
        "encoder": enc_cfg,
        "pretrain_wall_s": wall,
        "curves": curves(runs, out / "curves.png"),
        "results": results,
        "total_wall_s": round(time.time() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "table.md").write_text(markdown(doc))
    print(markdown(doc))
    return doc


if __name__ == "__main__":
    main()
