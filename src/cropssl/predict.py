r"""Crop maps: classify every pixel of a NetCDF cube with a head fitted by ``cropssl-evaluate``.

The library behind ``cropssl-predict`` (:mod:`cropssl.cli.predict`, the command line) and the map
agreement of ``cropssl-evaluate``.

Example::

    cropssl-predict --encoder exports/mae-v1 --head evals/fra/heads/mae-v1__logreg.safetensors \
        ../shared/data/worldcereal/2021_BEL_31UFS_month_cube_100x100.nc --out bel_map.nc

The head (format: :func:`cropssl.evaluation.heads.save_head`) holds the classifier, the class names, the
legend and the description of the encoder it was fitted on. ``--encoder`` (an export dir, ``.ckpt`` or
``presto``) must be that encoder -- its weights fingerprint is checked; it can be omitted when the head
names a loadable encoder or carries its own weights (fine-tuned and random encoders) and is not used by
``catboost_features`` heads.

The cube ``(t, y, x)`` is read with :func:`cropssl.data.ingest.read_input`, embedded and classified in
chunks (tqdm progress bar), and written as NetCDF with

* ``class`` ``(y, x)`` int16: class index (``-1`` = no data), CF ``flag_values`` / ``flag_meanings``;
* ``probability`` ``(class_index, y, x)`` float32 and ``class_name`` ``(class_index)``: per-class
  probabilities (a dimension cannot share the name of the 2-D ``class`` variable in NetCDF/xarray);
* the input's ``x`` / ``y`` coordinates and its ``crs`` (or ``spatial_ref``) variable with all attributes;
  ``grid_mapping`` set on the map variables; the class names also as the JSON attribute ``class_names``;

plus a PNG of the map (``--png``, default ``OUT.png``). A cube lacking a band the head needs (a band of the
encoder's channel groups, or of the hand-crafted features, that was observed in the head's training data)
is refused, naming the band, unless ``--allow-missing-bands``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cropssl.evaluation.heads import head_proba
from cropssl.io.maps import cube_grid, map_dataset, write_map
from cropssl.schema import BAND_GROUPS, BANDS


class PredictError(ValueError):
    """The head, encoder and input do not fit together."""


class NoDataWarning(UserWarning):
    """Most of a map is no-data (pixels without enough Sentinel-1/2 observations)."""


def months_between(start: str, end: str) -> int:
    """Months of the window ``start .. end`` (``YYYY-MM``, both included)."""
    from cropssl.data.ingest import IngestOptions

    lo, hi = IngestOptions(start=start, end=end).window_months()
    return hi - lo + 1


# ---------------------------------------------------------------------------------------------- bands
def _expand_ndvi(bands: Sequence[str]) -> list[str]:
    """NDVI is derived from B8 and B4: replace it by them."""
    out = [b for b in bands if b != "NDVI"]
    if "NDVI" in bands:
        out += [b for b in ("B8", "B4") if b not in out]
    return sorted(set(out), key=BANDS.index)


def head_bands(head: dict[str, Any], encoder: Any | None) -> list[str]:
    """Bands a head needs from the input: those its encoder / features read and its training data observed."""
    if head["strategy"] == "catboost_features":
        from cropssl.evaluation.features import DEFAULT_BANDS, STATIC_NAMES

        used = [*DEFAULT_BANDS, *STATIC_NAMES]
    else:
        idx = sorted({i for g in encoder.groups for i in BAND_GROUPS[g]})
        used = [BANDS[i] for i in idx]
    observed = head.get("observed_bands")
    if observed is not None:
        used = [b for b in used if b in observed or b == "NDVI"]
    return _expand_ndvi(used)


def check_cube_bands(path: Path, needed: Sequence[str], allow_missing: bool = False) -> list[str]:
    """Refuse a cube lacking a needed band (naming it and the variables it has); return the missing ones.

    Variables are matched with the same alias table as ``cropssl-shard`` (:mod:`cropssl.data.ingest.netcdf`).
    """
    from cropssl.data.ingest.netcdf import cube_variables
    from cropssl.schema import BAND_ALIASES, band_for_name

    variables = cube_variables(path)
    present = {band_for_name(v) for v in variables}
    missing = [b for b in needed if b not in present]
    if missing and not allow_missing:
        names = ", ".join(f"{b} (e.g. variable {' / '.join(BAND_ALIASES[b][:2])})" for b in missing)
        raise PredictError(
            f"input {path} lacks band(s) the head needs: {names}; the file has variables {variables}. The "
            "head was fitted with these bands observed; pass --allow-missing-bands to predict with them "
            "masked as missing"
        )
    return missing


# ---------------------------------------------------------------------------------------------- encoder
def resolve_head_encoder(head: dict[str, Any], spec: str | None) -> tuple[Any | None, str]:
    """The encoder to embed with: ``--encoder`` (checked against the head) or the head's own.

    Returns:
        ``(encoder or None, description)``.

    Raises:
        PredictError: ``--encoder`` is not the encoder the head was fitted on, or no encoder is available.

    """
    import torch

    from cropssl.encoder import PixelTimeSeriesEncoder
    from cropssl.evaluation.encoders import resolve_encoder

    desc = head.get("encoder")
    if head["strategy"] == "catboost_features" or desc is None:
        if spec:
            print(f"note: --encoder {spec} is not used by a {head['strategy']} head", file=sys.stderr)
        return None, "hand-crafted features"
    given = None
    if spec:
        given = resolve_encoder(spec)
        if given.fingerprint != desc.get("fingerprint"):
            raise PredictError(
                f"the head was fitted on encoder {desc.get('name')!r} ({desc.get('spec')}, weights sha256 "
                f"{str(desc.get('fingerprint'))[:12]}) but --encoder {spec} has weights sha256 "
                f"{given.fingerprint[:12]}: embeddings of another encoder mean nothing to this head"
            )
    state = head.get("encoder_state")
    if state is not None:  # fine-tuned or random encoder: the head carries the weights
        enc = PixelTimeSeriesEncoder(**dict(desc["config"]))
        enc.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
        what = "fine-tuned " if desc.get("finetuned") else ""
        return enc.eval(), f"{what}{desc.get('name')} (weights from the head)"
    if given is not None:
        return given.encoder, f"{given.name} ({given.spec})"
    try:
        loaded = resolve_encoder(str(desc.get("spec")))
    except (FileNotFoundError, ValueError) as exc:
        raise PredictError(
            f"the head was fitted on encoder {desc.get('name')!r} ({desc.get('spec')}), which cannot be "
            f"loaded from here ({exc}); pass it with --encoder"
        ) from exc
    if loaded.fingerprint != desc.get("fingerprint"):
        raise PredictError(
            f"encoder {desc.get('spec')} has changed since the head was fitted (weights sha256 "
            f"{loaded.fingerprint[:12]} != {str(desc.get('fingerprint'))[:12]})"
        )
    return loaded.encoder, f"{loaded.name} ({loaded.spec})"


# ---------------------------------------------------------------------------------------------- output
def predict_cube(
    head_path: str | Path,
    input_path: str | Path,
    out: str | Path,
    *,
    encoder: str | None = None,
    batch_size: int = 1024,
    png: str | Path | None = None,
    allow_missing_bands: bool = False,
    progress: bool = True,
    min_valid_steps: int = 1,
    window: tuple[str, str] | None = None,
    season_end_month: int | None = None,
    backend: str = "torch",
    reference: str | None = None,
    reference_classes: str | None = None,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Classify every pixel of a NetCDF cube with a saved head; write the map (NetCDF + PNG).

    Pixels with fewer than ``min_valid_steps`` timesteps holding a Sentinel-1 or Sentinel-2 value are
    no-data in the map (class -1, NaN probabilities), never a class; they are counted in the summary and
    the file's attributes, and a map that is mostly no-data warns.

    Args:
        head_path: Head written by ``cropssl-evaluate save_heads=true``.
        input_path: NetCDF cube ``(t, y, x)`` (WorldCereal band variables, ``crs`` variable).
        out: Output NetCDF path.
        encoder: Encoder spec (export dir, ``.ckpt``, ``presto``); default: the head's own.
        batch_size: Pixels per chunk.
        png: PNG path (default ``out`` with suffix ``.png``).
        allow_missing_bands: Predict even when the cube lacks bands the head needs (masked as missing).
        progress: Show a tqdm progress bar.
        min_valid_steps: Fewest S1/S2-observed timesteps a pixel needs to get a class.
        window: ``(start, end)`` months ``YYYY-MM`` of the window (default: the cube's middle months).
        season_end_month: End the window on this calendar month instead (1-12).
        backend: ``torch`` (eager), ``onnx``, ``onnx-int8`` or ``auto`` for an export-dir ``encoder``.
        reference: ``PATH:VARIABLE`` of a reference product layer on the cube's grid to compare the map with
            (:mod:`cropssl.evaluation.agreement`; writes ``OUT.agreement.json`` and ``OUT.difference.png``).
        reference_classes: ``CODE=NAME,...`` of the reference layer (codes not listed are excluded).
        trust_pickle: Read a pickled head of an earlier cropssl (a pickle can run code: your own only).

    Returns:
        A summary (``n_pixels``, ``n_nodata``, ``shape``, ``class_counts``, ``window``, ``notes`` (the
        ingest report's), ``seconds``, ``px_per_s``, paths).

    Raises:
        PredictError: head / encoder / input mismatch (names the band or encoder).
        FileNotFoundError: a missing file.

    """
    head_path, input_path, out = Path(head_path), Path(input_path), Path(out)
    head, fast, enc_desc, missing, timesteps = _prepare(
        head_path, input_path, out, encoder, backend, batch_size, allow_missing_bands, window, trust_pickle
    )
    samples, report = _read_window(input_path, timesteps, window, season_end_month)
    grid = cube_grid(input_path)
    enough = samples.observed_steps() >= min_valid_steps
    samples = samples.select(enough)
    start = time.perf_counter()
    cls, proba = _classify(head, fast, samples, grid["shape"], batch_size, progress)
    seconds = time.perf_counter() - start
    n_nodata = int((cls < 0).sum())
    if n_nodata > 0.5 * cls.size:
        warnings.warn(
            f"{input_path}: {n_nodata} of {cls.size} pixels ({n_nodata / cls.size:.0%}) have fewer than "
            f"{min_valid_steps} timestep(s) with Sentinel-1/2 data and are no-data in the map",
            NoDataWarning,
            stacklevel=2,
        )
    names = [str(c) for c in head["classes"]]
    attrs = {
        "Conventions": "CF-1.9",
        "title": f"cropssl crop map ({head['strategy']})",
        "class_names": json.dumps(names),
        "legend": str((head.get("legend") or {}).get("legend_name")),
        "strategy": str(head["strategy"]),
        "encoder": enc_desc,
        "head": str(head_path),
        "source": str(input_path),
        "timesteps": timesteps,
        "window_start": str(report.window.get("start", "")),
        "window_end": str(report.window.get("end", "")),
        "window_rule": str(report.window.get("rule", "")),
        "missing_bands": json.dumps(missing),
        "n_nodata": n_nodata,
        "min_valid_steps": int(min_valid_steps),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    png_path = Path(png) if png else out.with_suffix(".png")
    title = f"{input_path.name}: {head['strategy']} on {enc_desc}"
    write_map(out, png_path, map_dataset(cls, proba, names, grid, attrs), cls, grid, names, title)
    agreement = None
    if reference is not None:
        agreement = compare_with_reference(out, cls, names, reference, reference_classes, grid["dims"])
    ny, nx = grid["shape"]
    return {
        "agreement": agreement,
        "out": str(out),
        "png": str(png_path),
        "shape": [int(ny), int(nx)],
        "n_pixels": int(ny * nx),
        "n_classified": len(samples),
        "n_nodata": n_nodata,
        "class_counts": {n: int((cls == c).sum()) for c, n in enumerate(names)},
        "missing_bands": missing,
        "window": report.window,
        "notes": list(report.notes),
        "seconds": seconds,
        "px_per_s": len(samples) / seconds if seconds > 0 else float("inf"),
    }


def _prepare(
    head_path: Path, input_path: Path, out: Path, encoder: str | None, backend: str, batch_size: int,
    allow_missing_bands: bool, window: tuple[str, str] | None, trust_pickle: bool,
) -> tuple[dict[str, Any], Any, str, list[str], int]:  # fmt: skip
    """Check the request before any pixel is read.

    Returns:
        The head, the classifier of embeddings (:func:`_head_encoders`), the encoder's description, the
        bands the cube lacks (masked as missing) and the head's window length T.

    Raises:
        PredictError: a bad batch size / output suffix, a non-cube input, a head / encoder / window mismatch.

    """
    from cropssl.data.ingest import detect_format
    from cropssl.evaluation.heads import load_head

    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1, got {batch_size}")
    if out.suffix.lower() not in (".nc", ".nc4", ".netcdf"):
        raise PredictError(f"--out {out}: write a NetCDF file (.nc)")
    head = load_head(head_path, trust_pickle=trust_pickle)
    if detect_format(input_path) != "cube":
        raise PredictError(f"input {input_path} is not a NetCDF cube (t, y, x); cropssl-predict maps cubes")
    enc, fast, enc_desc = _head_encoders(head, encoder, backend)
    missing = check_cube_bands(input_path, head_bands(head, enc), allow_missing_bands)
    timesteps = int(head.get("timesteps", 12))
    if enc is not None and timesteps > enc.max_T:
        raise PredictError(f"the head uses T={timesteps} but the encoder accepts at most max_T={enc.max_T}")
    if window is not None and timesteps != months_between(*window):
        raise PredictError(
            f"--start {window[0]} --end {window[1]} is {months_between(*window)} months but the head was "
            f"fitted on T={timesteps}"
        )
    return head, fast, enc_desc, missing, timesteps


def _read_window(
    input_path: Path, timesteps: int, window: tuple[str, str] | None, season_end_month: int | None
) -> tuple[Any, Any]:
    """The cube's pixels over the head's window and the ingest report (monthly cubes only)."""
    from cropssl.data.ingest import IngestOptions, read_input

    options = IngestOptions(
        timesteps=timesteps,
        start=window[0] if window else None,
        end=window[1] if window else None,
        season_end_month=season_end_month,
    )
    samples, report = read_input(input_path, options=options)
    if report.cadence != "month":
        raise PredictError(f"input {input_path} is {report.cadence}ly; heads map monthly windows")
    return samples, report


def _head_encoders(head: dict[str, Any], encoder: str | None, backend: str) -> tuple[Any, Any, str]:
    """The head's eager encoder (bands / T are checked on it), what runs it, and its description."""
    enc, enc_desc = resolve_head_encoder(head, encoder)
    if backend == "torch":
        return enc, enc, enc_desc
    from cropssl.backends import load_backend

    if not (encoder and Path(encoder).is_dir()) or head.get("encoder_state") is not None:
        raise PredictError(
            f"--backend {backend} runs an export directory: pass the head's encoder as --encoder "
            "EXPORT_DIR (fine-tuned and random encoders live in the head and run eagerly)"
        )
    fast = load_backend(encoder, backend)
    return enc, fast, f"{enc_desc}, backend {fast.backend}"


def _classify(
    head: dict[str, Any], runner: Any, samples: Any, shape: tuple[int, int], batch_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Class index (-1 = no data) and probabilities per grid cell, filled chunk by chunk."""
    from tqdm.auto import tqdm

    rc = np.stack([samples.meta["row"].astype(np.int64), samples.meta["col"].astype(np.int64)], 1)
    proba = np.full((len(head["classes"]), *shape), np.nan, dtype=np.float32)
    cls = np.full(shape, -1, dtype=np.int16)
    with tqdm(total=len(samples), unit="px", desc="predicting", disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(samples), batch_size):
            chunk = samples.select(slice(i, i + batch_size))
            p = head_proba(head, runner, chunk)
            r, c = rc[i : i + len(chunk), 0], rc[i : i + len(chunk), 1]
            proba[:, r, c] = p.T.astype(np.float32)
            cls[r, c] = p.argmax(axis=1).astype(np.int16)
            bar.update(len(chunk))
    return cls, proba


def compare_with_reference(
    out: Path,
    cls: np.ndarray,
    names: list[str],
    reference: str,
    reference_classes: str | None,
    dims: tuple[str, str],
) -> dict[str, Any]:
    """Agreement of the map with a reference layer; writes ``.agreement.json`` and ``.difference.png``."""
    import xarray as xr

    from cropssl.evaluation.agreement import map_agreement, parse_reference_classes, write_difference_png
    from cropssl.io.atomic import atomic_path, write_text

    path, sep, var = reference.rpartition(":")
    if not sep or not path:
        raise PredictError(
            f"--reference {reference!r}: expected PATH:VARIABLE, e.g. product.nc:classification"
        )
    if not reference_classes:
        raise PredictError(
            "--reference needs --reference-classes CODE=NAME,... (e.g. 100=temporary_crops,0=other)"
        )
    mapping = parse_reference_classes(reference_classes)
    with xr.open_dataset(path, engine="h5netcdf", decode_cf=True, mask_and_scale=False) as ds:
        if var not in ds:
            raise PredictError(
                f"reference {path} has no variable {var!r}; it has {sorted(map(str, ds.data_vars))}"
            )
        layer = ds[var]
        if set(dims) <= set(layer.dims):
            layer = layer.transpose(*dims, ...)
        ref = np.asarray(layer.to_numpy()).squeeze()
    if ref.shape != cls.shape:
        raise PredictError(
            f"reference {path}:{var} has shape {ref.shape}, the map {cls.shape}: not the same grid"
        )
    agreement = map_agreement(cls, names, ref, mapping)
    write_text(out.with_suffix(".agreement.json"), json.dumps(agreement, indent=1) + "\n")
    with atomic_path(out.with_suffix(".difference.png")) as tmp:
        write_difference_png(tmp, cls, names, ref, mapping, f"{out.name} vs {Path(path).name}:{var}")
    return agreement
