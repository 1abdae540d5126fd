"""How separable are the classes? Fisher ratios of the synthetic generator against the real files.

For each per-pixel feature (mean VH, mean VV, max NDVI, mean NDVI over the observed months) and each file,
the Fisher ratio ``between-class variance of the class means / mean within-class variance`` over the
classes with at least 20 pixels: about 0.2-0.7 in the real French and East-African files, 4-14 for the
generator's clean physical model (variety 0). ``cropssl.data.synth.DEFAULT_VARIETY`` was chosen with this
table. Also a logistic-regression probe on the raw inputs (random 75/25 split, 12,000 pixels).

Run: ``python experiments/synth/calibrate.py [--data ../shared/data/worldcereal]``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from cropssl.data.ingest import read_input
from cropssl.data.synth import generate
from cropssl.schema import BAND_INDEX, PixelSamples


def features(s: PixelSamples) -> dict[str, np.ndarray]:
    """Per-pixel summary features over the observed months."""

    def present(band: str) -> np.ndarray:
        return np.where(s.mask[..., BAND_INDEX[band]], np.nan, s.x[..., BAND_INDEX[band]])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "VH mean": np.nanmean(present("VH"), 1),
            "VV mean": np.nanmean(present("VV"), 1),
            "NDVI max": np.nanmax(present("NDVI"), 1),
            "NDVI mean": np.nanmean(present("NDVI"), 1),
        }


def fisher(s: PixelSamples, min_count: int = 20) -> dict[str, float]:
    """Fisher ratio of every feature over the classes with at least ``min_count`` pixels."""
    labels, counts = np.unique(s.label, return_counts=True)
    out = {}
    for name, v in features(s).items():
        groups = [v[(s.label == c) & np.isfinite(v)] for c in labels[counts >= min_count]]
        groups = [g for g in groups if len(g) >= 5]
        n = np.array([len(g) for g in groups])
        means = np.array([g.mean() for g in groups])
        between = np.average((means - np.average(means, weights=n)) ** 2, weights=n)
        out[name] = float(between / np.average([g.var() for g in groups], weights=n))
    return out


def probe_accuracy(s: PixelSamples, seed: int = 0) -> float:
    """Logistic regression on the standardised raw inputs, random 75 / 25 split."""
    from sklearn.linear_model import LogisticRegression

    X = np.where(s.mask, 0, s.x).reshape(len(s), -1)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    perm = np.random.default_rng(seed).permutation(len(s))
    cut = int(0.75 * len(s))
    clf = LogisticRegression(max_iter=500).fit(X[perm[:cut]], s.label[perm[:cut]])
    return float(clf.score(X[perm[cut:]], s.label[perm[cut:]]))


def main() -> None:
    """Print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="../shared/data/worldcereal")
    args = p.parse_args()
    rows = {}
    for f in ("2022_FRA_LPIS_month.geoparquet", "2017_east_africa_public_month_wide.parquet"):
        path = Path(args.data) / f
        if path.exists():
            rows[f"real: {f}"] = fisher(read_input(path, 12)[0])
    for v in (0.0, 1.0, 2.0):
        for region in ("north_europe", "east_africa"):
            rows[f"synthetic {region}, variety {v:g}"] = fisher(
                generate(5000, regions=[region], seed=0, variety=v)
            )
    names = list(next(iter(rows.values())))
    print("| data | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names))
    for k, r in rows.items():
        print(f"| {k} | " + " | ".join(f"{r[n]:.2f}" for n in names) + " |")
    for v in (0.0, 2.0):
        acc = probe_accuracy(generate(12000, seed=3, variety=v))
        print(f"raw-input probe accuracy, all regions, variety {v:g}: {acc:.2f}")


if __name__ == "__main__":
    main()
