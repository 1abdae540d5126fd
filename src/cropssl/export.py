"""Export a pre-trained encoder so that it loads and runs without the training stack.

An export directory holds::

    model.safetensors        encoder weights only (keys without the ``encoder.`` prefix)
    config.json              architecture, input contract (bands, groups, T range, normalisation),
                             SSL method, lineage, metrics, versions, export time
    README.md                model card
    encoder.torchscript.pt   traced ``(x, mask, month, latlon, dynamic_world) -> embeddings`` module
    encoder.onnx             the same function as ONNX (dynamic batch and time axes)
    continue.safetensors     optional "continue bundle": the full method state dict (student, teacher,
                             heads) with the method's hyper-parameters in ``config.json["continue"]``

:func:`load_encoder` needs only torch, safetensors and :mod:`cropssl.encoder` / :mod:`cropssl.schema`
(no Lightning, Hydra or timm); :func:`export_encoder` needs torch (and onnx / onnxscript for ONNX).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from cropssl import __version__
from cropssl.artifacts import (
    CONFIG_FILE,
    CONTINUE_FILE,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    FORMATS,
    ONNX_FILE,
    README_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    jsonable,
    presto_path,
    sha256_file,
)
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.export_card import model_card
from cropssl.export_dir import (
    ExportError,
    load_continue_bundle,
    load_encoder,
    read_export_config,
)
from cropssl.export_onnx import (
    INPUT_NAMES,
    OUTPUT_NAME,
    TensorEncoder,
    example_inputs,
    write_formats,
)
from cropssl.io.atomic import atomic_dir
from cropssl.schema import (
    BAND_GROUPS,
    BANDS,
    DW_CLASSES,
    DW_MISSING,
    NORM_ADD,
    NORM_DIV,
    STATIC_GROUPS,
    UNITS,
)

__all__ = [
    "CONFIG_FILE",
    "CONTINUE_FILE",
    "FORMATS",
    "INPUT_NAMES",
    "ONNX_FILE",
    "OUTPUT_NAME",
    "TORCHSCRIPT_FILE",
    "WEIGHTS_FILE",
    "ExportError",
    "TensorEncoder",
    "example_inputs",
    "export_encoder",
    "load_continue_bundle",
    "load_encoder",
    "read_export_config",
]

TEACHER_ENCODER_PREFIX = "teacher.ema.module.encoder."


# ----------------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------------
def _callback_metrics(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """Scores the checkpoint's callbacks stored (ModelCheckpoint's monitored metric, if any)."""
    out: dict[str, Any] = {}
    for state in (ckpt.get("callbacks") or {}).values():
        if not isinstance(state, Mapping):
            continue
        monitor = state.get("monitor")
        if not monitor:
            continue
        for key in ("current_score", "best_model_score"):
            value = jsonable(state.get(key))
            if isinstance(value, (int, float)):
                out[f"{monitor}" if key == "current_score" else f"{monitor}/best"] = value
    return out


def _logged_metrics(ckpt_path: Path, global_step: int | None) -> dict[str, dict[str, float]]:
    """Last logged value (at or before the checkpoint's step) of each column of the run's metrics.csv."""
    csv_path = ckpt_path.parent.parent / "metrics.csv"
    if not csv_path.exists():
        return {}
    last: dict[str, dict[str, float]] = {}
    try:
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    step = int(float(row.get("step") or "nan"))
                except ValueError:
                    continue
                if global_step is not None and step >= global_step:
                    continue
                for k, v in row.items():
                    if k in ("step", "epoch") or k is None or v in (None, ""):
                        continue
                    try:
                        val = float(v)
                    except ValueError:
                        continue
                    if math.isfinite(val):
                        last[k] = {"value": val, "step": step}
    except (OSError, csv.Error):
        return {}
    return last


PRESTO_METHOD = "presto (published weights)"


def _presto_checkpoint(path: Path) -> dict[str, Any]:
    """Presto's published weights in the shape of a cropssl checkpoint (encoder only, no training state)."""
    encoder = PixelTimeSeriesEncoder.from_presto(path)
    record = {"run_dir": None, "method": "presto", "start_mode": "published weights", "parent": None,
              "data": [], "source": "nasaharvest/presto default_model.pt"}  # fmt: skip
    return {
        "state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()},
        "cropssl": {"encoder_config": encoder.config, "method": PRESTO_METHOD, "lineage": [record]},
        "global_step": None,
    }


def _read_checkpoint(ckpt_path: Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint (or Presto's weights as one) and its resolved path."""
    if str(ckpt_path) == "presto" or ckpt_path.name == "default_model.pt":
        path = presto_path(None if str(ckpt_path) == "presto" else ckpt_path)
        return _presto_checkpoint(path), path
    from cropssl.checkpointing import CheckpointError, read_encoder_checkpoint

    try:
        return read_encoder_checkpoint(ckpt_path)[0], ckpt_path
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc


def export_encoder(
    ckpt_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    formats: Sequence[str] = FORMATS,
    metrics: Mapping[str, Any] | None = None,
    continue_bundle: bool = True,
    *,
    overwrite: bool = False,
    teacher: bool = False,
    onnx_opset: int = 17,
    onnx_exporter: str = "auto",
) -> dict[str, Any]:
    """Export the encoder of a cropssl checkpoint.

    ``model.safetensors``, ``config.json`` and ``README.md`` are always written. TorchScript and ONNX are
    verified against the eager encoder on inputs of other batch sizes and lengths than the tracing
    example; a format that fails (export or verification) is reported with a warning and recorded in
    ``config.json["formats_failed"]``, the other formats are still written. Files are written to a
    temporary directory that is renamed into place at the end.

    Args:
        ckpt_path: A checkpoint written by ``cropssl-pretrain`` (``runs/<run>/checkpoints/last.ckpt``).
        out_dir: The export directory to create.
        formats: Any of ``safetensors``, ``torchscript``, ``onnx`` (safetensors is always written).
        metrics: Extra metrics to record (e.g. linear-probe accuracy), name -> number.
        continue_bundle: Also write ``continue.safetensors`` (full method state) for continued training.
        overwrite: Replace an existing ``out_dir``.
        teacher: Export the EMA teacher's encoder (``teacher.ema.module.encoder.*``) instead of the student.
        onnx_opset: ONNX opset (>= 17; the torch.export-based exporter uses at least 18).
        onnx_exporter: ``auto`` (TorchScript-based exporter, then the torch.export-based one if it fails),
            ``torchscript`` or ``dynamo``.

    Returns:
        The content of ``config.json``.

    Raises:
        FileNotFoundError: The checkpoint does not exist.
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False.
        ExportError: The checkpoint has no cropssl metadata or no (matching) encoder weights.
        ValueError: Unknown formats or opset < 17.

    """
    ckpt_path = Path(ckpt_path)
    out = Path(out_dir)
    formats = [f.strip().lower() for f in formats if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    if onnx_opset < 17:
        raise ValueError(f"onnx_opset must be >= 17, got {onnx_opset}")
    ckpt, ckpt_path = _read_checkpoint(ckpt_path)
    presto = ckpt["cropssl"]["method"] == PRESTO_METHOD
    if presto:  # the published weights: no training state to continue (use start.source=presto)
        continue_bundle = False
    if out.exists() and not overwrite:  # before the checkpoint's encoder is built
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    encoder = _checkpoint_encoder(ckpt, ckpt_path, teacher)
    all_metrics, sources = _collect_metrics(ckpt, ckpt_path, presto, metrics)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tmp.chmod(0o755)
        save_file(
            {k: v.detach().contiguous() for k, v in encoder.state_dict().items()},
            str(tmp / WEIGHTS_FILE),
            metadata={"format": EXPORT_FORMAT, "cropssl_version": __version__},
        )
        written = write_formats(tmp, encoder, formats, onnx_opset, onnx_exporter)
        continue_info = _write_continue_bundle(tmp, ckpt) if continue_bundle else None
        files = [WEIGHTS_FILE, CONFIG_FILE, README_FILE, *written["files"]]
        if continue_info:
            files.append(CONTINUE_FILE)
        config: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "architecture": "cropssl.encoder.PixelTimeSeriesEncoder",
            "encoder_config": encoder.config,
            "embed_dim": encoder.embed_dim,
            "ssl_method": ckpt["cropssl"].get("method"),
            "inputs": inputs_spec(encoder),
            "output": {"name": OUTPUT_NAME, "shape": f"[B, {encoder.embed_dim}]", "dtype": "float32"},
            "files": files,
            "formats": written["formats"],
            "formats_failed": written["failed"],
            "torchscript": {"file": TORCHSCRIPT_FILE, "method": "torch.jit.trace"}
            if "torchscript" in written["formats"]
            else {},
            "onnx": written["onnx"],
            "verification": written["verification"],
            **_provenance(ckpt, ckpt_path, presto, teacher),
            "metrics": all_metrics,
            "metrics_sources": sources,
            "continue": continue_info,
            "cropssl_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "export_dir_name": out.name,
        }
        config = jsonable(config)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        (tmp / README_FILE).write_text(model_card(config))
        for f in tmp.iterdir():
            f.chmod(0o644)
    return config


def _provenance(ckpt: Mapping[str, Any], ckpt_path: Path, presto: bool, teacher: bool) -> dict[str, Any]:
    """``parent_checkpoint`` (path, hash, step, which encoder) and the ``lineage`` ending in this export."""
    sha = sha256_file(ckpt_path)
    parent = {
        "kind": "presto" if presto else "checkpoint",
        "path": str(ckpt_path.resolve()),
        "sha256": sha,
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
        "encoder": "teacher" if teacher else "student",
    }
    lineage = [dict(r) for r in jsonable(ckpt["cropssl"].get("lineage") or [])]
    if lineage:
        lineage[-1]["exported_from"] = {"path": parent["path"], "sha256": sha,
                                        "global_step": parent["global_step"]}  # fmt: skip
    return {"parent_checkpoint": parent, "lineage": lineage}


def _checkpoint_encoder(ckpt: Mapping[str, Any], ckpt_path: Path, teacher: bool) -> PixelTimeSeriesEncoder:
    """The (student or EMA teacher) encoder of a checkpoint, in eval mode; names the mismatch if any."""
    state: Mapping[str, Any] = ckpt["state_dict"]
    prefix = TEACHER_ENCODER_PREFIX if teacher else "encoder."
    enc_state = {
        k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and isinstance(v, Tensor)
    }
    if not enc_state:
        which = "teacher encoder" if teacher else "encoder"
        raise ExportError(
            f"{ckpt_path} holds no {which} weights (no state_dict keys starting with {prefix!r})"
        )
    enc_cfg = dict(ckpt["cropssl"]["encoder_config"])
    try:
        encoder = PixelTimeSeriesEncoder(**enc_cfg)
        encoder.load_state_dict(enc_state, strict=True)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ExportError(
            f"the encoder weights of {ckpt_path} do not match its encoder_config {enc_cfg}: {exc}"
        ) from exc
    return encoder.eval()


def _collect_metrics(
    ckpt: Mapping[str, Any], ckpt_path: Path, presto: bool, metrics: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The metrics to record (from metrics.csv, the checkpoint's callbacks, the caller) and their sources."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for k, v in ({} if presto else _logged_metrics(ckpt_path, ckpt.get("global_step"))).items():
        values[k], sources[k] = v["value"], f"metrics.csv, step {v['step']}"
    for k, v in _callback_metrics(ckpt).items():
        values[k], sources[k] = v, "checkpoint callback"
    for k, v in (metrics or {}).items():
        values[str(k)], sources[str(k)] = jsonable(v), "export argument"
    return values, sources


def _write_continue_bundle(tmp: Path, ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """``continue.safetensors``: the full method state, to continue pre-training from the export."""
    meta = ckpt["cropssl"]
    full = {
        k: v.detach().contiguous().clone() for k, v in ckpt["state_dict"].items() if isinstance(v, Tensor)
    }
    save_file(full, str(tmp / CONTINUE_FILE),
              metadata={"format": "cropssl-continue", "method": str(meta.get("method"))})  # fmt: skip
    run_config = meta.get("run_config") or {}
    return {
        "file": CONTINUE_FILE,
        "sha256": sha256_file(tmp / CONTINUE_FILE),
        "method": meta.get("method"),
        "method_config": jsonable(run_config.get("method") if isinstance(run_config, Mapping) else None),
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
        "num_tensors": len(full),
        "has_teacher": any(k.startswith("teacher.") for k in full),
        "prefixes": sorted({k.split(".", 1)[0] for k in full}),
        "run_config": jsonable(run_config),
    }


def inputs_spec(encoder: PixelTimeSeriesEncoder) -> dict[str, Any]:
    """What an export's inputs are: bands, units, groups, T range, normalisation, tensors."""
    return {
        "bands": list(BANDS),
        "units": dict(UNITS),
        "groups": {g: [BANDS[i] for i in BAND_GROUPS[g]] for g in encoder.groups},
        "static_groups": [g for g in encoder.groups if g in STATIC_GROUPS],
        "timesteps": {"min": 1, "max": encoder.max_T},
        "normalization": {
            "add": [float(v) for v in NORM_ADD],
            "div": [float(v) for v in NORM_DIV],
            "formula": "(x + add) / div; NDVI recomputed from normalised B8, B4; 0 where missing",
        },
        "dynamic_world": {"classes": DW_CLASSES, "missing": DW_MISSING},
        "tensors": {
            "x": {"shape": "[B, T, 17]", "dtype": "float32", "meaning": "normalised values"},
            "mask": {"shape": "[B, T, 17]", "dtype": "bool", "meaning": "True = missing"},
            "month": {"shape": "[B, T]", "dtype": "int64", "meaning": "calendar month, 0 = January"},
            "latlon": {"shape": "[B, 2]", "dtype": "float32", "meaning": "latitude, longitude (deg)"},
            "dynamic_world": {
                "shape": "[B, T]",
                "dtype": "int64",
                "meaning": f"Dynamic World class, {DW_MISSING} = missing",
            },
        },
    }
