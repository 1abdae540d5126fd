"""Mean NDVI and VH curves per class: synthetic generator (one region) next to the real French LPIS file.

Run from the project root::

    python experiments/synth/plot_curves.py            # writes experiments/synth/curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cropssl.data.synth import class_names, generate
from cropssl.schema import BAND_INDEX, PixelSamples

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "worldcereal"
MONTHS = "JFMAMJJASOND"
LEGENDS = ("CROPTYPE_INSEASON_FRANCE", "CROPTYPE28", "CROPTYPE24", "LANDCOVER10")
UNINFORMATIVE = {None, "ignore", "no_temporary_crop", "no_crop"}


def real_name(code: int, mappings: dict) -> str:
    """Most specific informative class name of an ``ewoc_code`` in ``class_mappings.json``."""
    for legend in LEGENDS:
        name = mappings.get(legend, {}).get(str(code))
        if name not in UNINFORMATIVE:
            return name
    return next((mappings[g][str(code)] for g in LEGENDS if mappings.get(g, {}).get(str(code))), "?")


def class_curves(s: PixelSamples, top: int) -> tuple[list[int], dict[int, dict[str, np.ndarray]], np.ndarray]:
    """Top classes by count and their mean NDVI / VH per timestep (missing values ignored)."""
    codes, counts = np.unique(s.label[s.label >= 0], return_counts=True)
    order = [int(c) for c in codes[np.argsort(-counts, kind="stable")][:top]]
    curves: dict[int, dict[str, np.ndarray]] = {}
    for code in order:
        sel = s.label == code
        curves[code] = {"n": np.array(sel.sum())}
        for band in ("NDVI", "VH"):
            i = BAND_INDEX[band]
            v = np.where(s.mask[sel][..., i], np.nan, s.x[sel][..., i])
            curves[code][band] = np.nanmean(v, 0)
    return order, curves, s.month[0]


def panel(axes, order, curves, month, names, title):
    for code in order:
        c = curves[code]
        label = f"{names(code)} ({code}, n={int(c['n'])})"
        axes[0].plot(c["NDVI"], marker="o", ms=3, label=label)
        axes[1].plot(c["VH"], marker="o", ms=3, label=label)
    axes[0].set_title(title, fontsize=10)
    axes[0].set_ylabel("mean NDVI")
    axes[1].set_ylabel("mean VH (dB)")
    axes[0].set_ylim(-0.35, 1.0)
    axes[1].set_ylim(-30, -10)
    for ax in axes:
        ax.set_xticks(range(len(month)), [MONTHS[m] for m in month])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6.5, loc="lower left")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--region", default="mediterranean", help="synthetic region to plot")
    p.add_argument("--year", type=int, default=2022, help="synthetic harvest year (the French file is 2022)")
    p.add_argument("--pixels", type=int, default=20000)
    p.add_argument("--top", type=int, default=6, help="classes per panel (by count)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=HERE / "curves.png")
    args = p.parse_args()

    synth = generate(args.pixels, regions=[args.region], years=[args.year], seed=0)
    syn_names = class_names()
    real_path = args.data / "2022_FRA_LPIS_month.geoparquet"
    has_real = real_path.exists()
    fig, axes = plt.subplots(2, 2 if has_real else 1, figsize=(13 if has_real else 7, 7.5), squeeze=False)
    order, curves, month = class_curves(synth, args.top)
    panel(
        axes[:, 0],
        order,
        curves,
        month,
        lambda c: syn_names[c],
        f"synthetic: {args.region} {args.year} (cropssl-synth, {len(synth)} px, top {args.top} classes)",
    )
    if has_real:
        from cropssl.data.ingest import read_input

        real, _ = read_input(real_path, 12)
        mappings = json.loads((args.data / "class_mappings.json").read_text())
        order, curves, month = class_curves(real, args.top)
        panel(
            axes[:, 1],
            order,
            curves,
            month,
            lambda c: real_name(c, mappings),
            f"real: {real_path.name} ({len(real)} px, top {args.top} classes)",
        )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
