"""Robustness to what the field throws at a model: every fitted head again on a degraded test fold.

The transforms act on the test samples only, and only as they say -- they mask values (never invent
them) or change the values of present ones:

* ``no_s2``: every Sentinel-2 band (and NDVI) missing -- a SAR-only pixel;
* ``no_s1``: every Sentinel-1 band missing;
* ``clouds_<rate>``: Sentinel-2 months masked at an average ``rate`` with a seasonal pattern (winter months
  cloudier: probability ``∝ 1 + cos(2π (month - peak) / 12)``, ``peak`` January; per-pixel draws);
* ``s2_radiometry``: present S2 reflectances times ``gain`` plus ``offset`` (reflectance x 1e4), as
  between processing baselines or L1C and L2A; NDVI follows from the changed B8 / B4;
* ``no_meteo``: AgERA5 temperature and precipitation missing.

:func:`evaluate_robustness` gives, per model, the macro F1 under each transform and the drop from the
clean test fold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cropssl.schema import BAND_INDEX, S2_BANDS, PixelSamples

S2 = [BAND_INDEX[b] for b in S2_BANDS]
NDVI = BAND_INDEX["NDVI"]
S1 = [BAND_INDEX["VV"], BAND_INDEX["VH"]]
METEO = [BAND_INDEX["temperature_2m"], BAND_INDEX["total_precipitation"]]


def mask_bands(samples: PixelSamples, bands: Sequence[int], steps: np.ndarray | None = None) -> PixelSamples:
    """A copy with ``bands`` missing (at ``steps`` ``[N, T]`` bool, or everywhere); values zeroed there."""
    s = samples.select(np.arange(len(samples)))
    where = np.ones(s.mask.shape[:2], bool) if steps is None else steps
    for b in bands:
        s.mask[..., b] |= where
    s.x[s.mask] = 0.0
    return s


def seasonal_clouds(samples: PixelSamples, rate: float, seed: int = 0, peak_month: int = 0) -> PixelSamples:
    """S2 (and NDVI) masked on cloudy months drawn per pixel with a seasonal probability, mean ``rate``."""
    rng = np.random.default_rng(seed)
    weight = 1 + np.cos(2 * np.pi * (samples.month.astype(np.float64) - peak_month) / 12)
    lo, hi = 0.0, 1.0 / max(float(weight[weight > 0].min(initial=1.0)), 1e-6)
    for _ in range(50):  # the scale whose clipped probabilities average ``rate``
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.clip(mid * weight, 0, 1).mean() < rate else (lo, mid)
    p = np.clip(hi * weight, 0.0, 1.0)
    cloudy = rng.random(p.shape) < p
    return mask_bands(samples, [*S2, NDVI], cloudy)


def s2_radiometry(samples: PixelSamples, gain: float = 1.0, offset: float = 0.0) -> PixelSamples:
    """Present S2 values ``x * gain + offset`` (reflectance x 1e4, clipped at 0); NDVI recomputed."""
    s = samples.select(np.arange(len(samples)))
    present = ~s.mask[..., S2]
    s.x[..., S2] = np.where(present, np.maximum(s.x[..., S2] * gain + offset, 0.0), 0.0)
    b8, b4 = s.x[..., BAND_INDEX["B8"]], s.x[..., BAND_INDEX["B4"]]
    missing = s.mask[..., BAND_INDEX["B8"]] | s.mask[..., BAND_INDEX["B4"]] | ((b8 + b4) == 0)
    s.x[..., NDVI] = np.where(missing, 0.0, (b8 - b4) / np.where(missing, 1.0, b8 + b4))
    s.mask[..., NDVI] = missing
    return s


def transforms(cfg: Mapping[str, Any], seed: int = 0) -> dict[str, Callable[[PixelSamples], PixelSamples]]:
    """The transforms of a ``robustness`` config block (``cloud_rates``, ``s2_gain``, ``s2_offset``)."""
    out: dict[str, Callable[[PixelSamples], PixelSamples]] = {
        "no_s2": lambda s: mask_bands(s, [*S2, NDVI]),
        "no_s1": lambda s: mask_bands(s, S1),
    }
    from cropssl.evaluation.config import RobustnessConfig

    cfg = {**dataclasses.asdict(RobustnessConfig()), **dict(cfg)}  # the config's defaults, one home
    for rate in cfg["cloud_rates"]:
        out[f"clouds_{round(100 * float(rate))}"] = lambda s, r=float(rate): seasonal_clouds(s, r, seed)
    gain, offset = float(cfg["s2_gain"]), float(cfg["s2_offset"])
    out["s2_radiometry"] = lambda s: s2_radiometry(s, gain, offset)
    out["no_meteo"] = lambda s: mask_bands(s, METEO)
    return out


def evaluate_robustness(
    fitted: Sequence[tuple[str, dict[str, Any], Any]],
    test: PixelSamples,
    y: np.ndarray,
    cfg: Mapping[str, Any],
    seed: int = 0,
) -> dict[str, Any]:
    """Macro F1 of every fitted head under every transform, and its drop from the clean test fold.

    Args:
        fitted: ``(name, head, encoder or None)`` of every model (see :mod:`cropssl.evaluation.heads`).
        test: The clean test samples.
        y: ``[M]`` their class indices.
        cfg: The ``robustness`` config (``cloud_rates``, ``s2_gain``, ``s2_offset``).
        seed: Seed of the cloud draws.

    Returns:
        ``{"transforms": [...], "results": {model: {"clean": f1, transform: {"macro_f1", "drop"}}},
        "config": cfg}``; macro F1 over the test fold's classes, the clean one recomputed the same way.

    """
    from sklearn.metrics import f1_score

    from cropssl.evaluation.heads import head_proba

    ts = transforms(cfg, seed)
    degraded = {name: fn(test) for name, fn in ts.items()}
    labels = np.unique(y)

    def score(head: dict[str, Any], encoder: Any, samples: PixelSamples) -> float:
        pred = head_proba(head, encoder, samples).argmax(1)
        return float(f1_score(y, pred, labels=labels, average="macro", zero_division=0))

    res: dict[str, dict[str, Any]] = {}
    for model, head, encoder in fitted:
        clean = score(head, encoder, test)
        res[model] = {"clean": clean}
        for tname, samples in degraded.items():
            f1 = score(head, encoder, samples)
            res[model][tname] = {"macro_f1": f1, "drop": clean - f1}
    return {"transforms": list(ts), "results": res, "config": dict(cfg)}
