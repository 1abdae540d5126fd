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
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cropssl import __version__
from cropssl.artifacts import jsonable, sha256_file
from cropssl.encoder import PixelTimeSeriesEncoder
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

EXPORT_FORMAT = "cropssl-encoder"
EXPORT_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
README_FILE = "README.md"
TORCHSCRIPT_FILE = "encoder.torchscript.pt"
ONNX_FILE = "encoder.onnx"
CONTINUE_FILE = "continue.safetensors"
FORMATS: tuple[str, ...] = ("safetensors", "torchscript", "onnx", "onnx-int8")
FORMAT_FILES: dict[str, str] = {
    "safetensors": WEIGHTS_FILE,
    "torchscript": TORCHSCRIPT_FILE,
    "onnx": ONNX_FILE,
    "onnx-int8": "encoder.int8.onnx",
}
INPUT_NAMES: tuple[str, ...] = ("x", "mask", "month", "latlon", "dynamic_world")
OUTPUT_NAME = "embeddings"
TEACHER_ENCODER_PREFIX = "teacher.ema.module.encoder."
#: Largest |difference| between the exported formats and the eager encoder accepted at export time.
VERIFY_ATOL = 1e-4


class ExportError(ValueError):
    """A checkpoint cannot be exported (no cropssl metadata, no encoder weights, ...)."""


class TensorEncoder(nn.Module):
    """Tensor-only wrapper ``(x, mask, month, latlon, dynamic_world) -> [B, d]`` used for TorchScript / ONNX.

    Args:
        encoder: The encoder to wrap (put it in eval mode first).

    """

    def __init__(self, encoder: PixelTimeSeriesEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, x: Tensor, mask: Tensor, month: Tensor, latlon: Tensor, dynamic_world: Tensor
    ) -> Tensor:
        """Embed normalised inputs (see :meth:`PixelTimeSeriesEncoder.forward_tensors`)."""
        return self.encoder.forward_tensors(x, mask, month, latlon, dynamic_world)


# ----------------------------------------------------------------------------------------------------------
# loading (torch + safetensors + cropssl.encoder only)
# ----------------------------------------------------------------------------------------------------------
def _reexport_hint(config: Mapping[str, Any] | None) -> str:
    parent = ((config or {}).get("parent_checkpoint") or {}).get("path")
    ckpt = parent if parent else "CKPT"
    return f"re-export it with `cropssl-export {ckpt} --out DIR --overwrite`"


def read_export_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``config.json`` of an export directory.

    Args:
        path: The export directory.

    Returns:
        The parsed configuration.

    Raises:
        FileNotFoundError: The directory or its ``config.json`` is missing (the message says how to
            re-export).
        ValueError: ``config.json`` is not a cropssl export configuration.

    """
    d = Path(path)
    if not d.is_dir():
        raise FileNotFoundError(
            f"export directory {d} does not exist; create it with `cropssl-export CKPT --out {d}`"
        )
    cfg_path = d / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(
            f"export directory {d} lacks {CONFIG_FILE}; {_reexport_hint(None).replace('DIR', str(d))}"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path} is not valid JSON ({exc}); {_reexport_hint(None)}") from exc
    enc_cfg = config.get("encoder_config") or config.get("encoder")
    if not isinstance(enc_cfg, Mapping):
        raise ValueError(f"{cfg_path} has no encoder_config: not a cropssl export; {_reexport_hint(config)}")
    return config


def read_safetensors(path: Path, config: Mapping[str, Any] | None, device: str = "cpu") -> dict[str, Tensor]:
    """Read a ``.safetensors`` file of an export directory; a damaged one is named with the fix.

    Raises:
        ValueError: the file is truncated or not a safetensors file (names it and how to re-export).

    """
    from safetensors import SafetensorError

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as exc:
        hint = _reexport_hint(config).replace("DIR", str(path.parent))
        raise ValueError(f"{path} is truncated or corrupt ({exc}); {hint}") from exc


def load_encoder(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu", backend: str = "torch"
) -> PixelTimeSeriesEncoder:
    """Load an exported encoder (``model.safetensors`` + ``config.json``) in eval mode.

    Only torch, safetensors and :mod:`cropssl.encoder` are needed (no Lightning, Hydra or timm); the ONNX
    backends need onnxruntime.

    Args:
        path: The export directory written by :func:`export_encoder` / ``cropssl-export``.
        map_location: Device to load the weights on (eager backend).
        backend: ``torch`` (eager, default), ``onnx``, ``onnx-int8`` or ``auto`` (the fastest one the
            directory holds, see :mod:`cropssl.backends`); every backend is called as ``encoder(batch)``.

    Returns:
        The encoder in eval mode; its export configuration is attached as ``encoder.export_config``.

    Raises:
        FileNotFoundError: The directory, ``config.json`` or ``model.safetensors`` is missing.
        ValueError: The weights are truncated / corrupt or do not match the architecture in
            ``config.json``.

    """
    if backend != "torch":
        from cropssl.backends import load_backend

        return load_backend(path, backend)
    d = Path(path)
    config = read_export_config(d)
    weights = d / WEIGHTS_FILE
    if not weights.exists():
        raise FileNotFoundError(
            f"export directory {d} lacks {WEIGHTS_FILE} (the encoder weights); "
            f"{_reexport_hint(config).replace('DIR', str(d))}"
        )
    enc_cfg = dict(config.get("encoder_config") or config["encoder"])
    encoder = PixelTimeSeriesEncoder(**enc_cfg)
    state = read_safetensors(weights, config, device=str(map_location))
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{weights} does not match the architecture in {d / CONFIG_FILE}: {exc}. "
            f"{_reexport_hint(config).replace('DIR', str(d))}"
        ) from exc
    encoder.to(map_location).eval()
    encoder.export_config = config  # type: ignore[assignment]
    encoder.backend = "torch"  # type: ignore[assignment]
    return encoder


def load_continue_bundle(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read the continue bundle of an export directory (full method state + method hyper-parameters).

    Args:
        path: The export directory.

    Returns:
        The full method ``state_dict`` (student ``encoder.*``, heads, ``teacher.*``) and
        ``config.json["continue"]`` (``method``, ``method_config``, ``global_step``, ...).

    Raises:
        FileNotFoundError: The directory was exported without a continue bundle.

    """
    d = Path(path)
    config = read_export_config(d)
    bundle = d / CONTINUE_FILE
    if not bundle.exists() or not config.get("continue"):
        raise FileNotFoundError(
            f"export directory {d} has no continue bundle ({CONTINUE_FILE}); re-export without "
            f"--no-continue-bundle: {_reexport_hint(config).replace('DIR', str(d))}"
        )
    return read_safetensors(bundle, config), dict(config["continue"])


# ----------------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------------
def example_inputs(
    encoder: PixelTimeSeriesEncoder, batch: int = 5, timesteps: int = 12, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Random normalised inputs with missing values (for tracing, verification and benchmarks).

    Args:
        encoder: The encoder (only ``max_T`` is used).
        batch: Batch size.
        timesteps: Number of timesteps (clipped to ``encoder.max_T``).
        seed: Random seed.

    Returns:
        ``(x, mask, month, latlon, dynamic_world)`` tensors on the CPU.

    """
    g = torch.Generator().manual_seed(seed)
    t = max(1, min(int(timesteps), encoder.max_T))
    x = torch.randn(batch, t, len(BANDS), generator=g)
    mask = torch.rand(batch, t, len(BANDS), generator=g) < 0.2
    mask[:, :, 2:12] |= (torch.rand(batch, t, 1, generator=g) < 0.3).expand(batch, t, 10)
    x = x.masked_fill(mask, 0.0)
    month = (torch.randint(0, 12, (batch, 1), generator=g) + torch.arange(t)) % 12
    latlon = torch.stack(
        [torch.rand(batch, generator=g) * 140 - 60, torch.rand(batch, generator=g) * 360 - 180], 1
    )
    dw = torch.randint(0, DW_CLASSES, (batch, t), generator=g)
    return x, mask, month, latlon, dw


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


def _onnx_op_of(exc: BaseException) -> str:
    """Best guess of the operator an ONNX export error is about (else the error type)."""
    text = f"{exc}"
    for pattern in (
        r"(aten[:.]{1,2}[A-Za-z0-9_.]+|prim::[A-Za-z0-9_]+|onnx::[A-Za-z0-9_]+)",
        r"No Op registered for (\w+)",
        r"operator '?([A-Za-z0-9_:.]+)'?",
    ):
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return type(exc).__name__


def _export_onnx_dynamo(wrapper: TensorEncoder, args: tuple[Tensor, ...], path: Path, opset: int) -> None:
    max_t = wrapper.encoder.max_T
    batch = torch.export.Dim("batch", min=1)
    time = torch.export.Dim("time", min=1, max=max_t)
    shapes = {
        "x": {0: batch, 1: time},
        "mask": {0: batch, 1: time},
        "month": {0: batch, 1: time},
        "latlon": {0: batch},
        "dynamic_world": {0: batch, 1: time},
    }
    torch.onnx.export(
        wrapper,
        args,
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=[OUTPUT_NAME],
        dynamic_shapes=shapes,
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def _export_onnx_torchscript(
    wrapper: TensorEncoder, args: tuple[Tensor, ...], path: Path, opset: int
) -> None:
    axes: dict[str, dict[int, str]] = {
        n: {0: "batch", 1: "time"} for n in ("x", "mask", "month", "dynamic_world")
    }
    axes["latlon"] = {0: "batch"}
    axes[OUTPUT_NAME] = {0: "batch"}
    torch.onnx.export(
        wrapper,
        args,
        str(path),
        input_names=list(INPUT_NAMES),
        output_names=[OUTPUT_NAME],
        dynamic_axes=axes,
        opset_version=opset,
        dynamo=False,
    )


#: ONNX exporters: the TorchScript-based one (fast, deprecated in torch >= 2.9) and torch.export-based one.
ONNX_EXPORTERS: dict[str, Any] = {"torchscript": _export_onnx_torchscript, "dynamo": _export_onnx_dynamo}


def _export_onnx(
    wrapper: TensorEncoder,
    args: tuple[Tensor, ...],
    path: Path,
    opset: int,
    exporter: str = "auto",
    check: Any = None,
) -> tuple[str, int, Any]:
    """Export ``wrapper`` to ONNX with dynamic batch and time axes, then run ``check(path)``.

    With ``exporter="auto"`` the TorchScript-based exporter is tried first (fast), then the torch.export-based
    one (which needs opset >= 18). Returns the exporter used, the opset and the result of ``check``.
    """
    names = list(ONNX_EXPORTERS) if exporter == "auto" else [exporter]
    if any(n not in ONNX_EXPORTERS for n in names):
        raise ValueError(f"unknown ONNX exporter {exporter!r}; choose auto, {', '.join(ONNX_EXPORTERS)}")
    errors: list[str] = []
    for name in names:
        used_opset = max(opset, 18) if name == "dynamo" else opset
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ONNX_EXPORTERS[name](wrapper, args, path, used_opset)
            result = check(path) if check is not None else None
            return name, used_opset, result
        except Exception as exc:
            for f in path.parent.glob(f"{path.name}*"):
                f.unlink()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            errors.append(f"{name} exporter failed ({_onnx_op_of(exc)}): {first}")
    raise RuntimeError("; ".join(errors))


def _verify(run: Any, wrapper: TensorEncoder, encoder: PixelTimeSeriesEncoder) -> dict[str, Any]:
    """Compare an exported function with the eager encoder on fresh inputs of other shapes."""
    worst = 0.0
    shapes = []
    for batch, t in ((3, min(12, encoder.max_T)), (1, min(7, encoder.max_T)), (7, min(24, encoder.max_T))):
        args = example_inputs(encoder, batch, t, seed=batch * 100 + t)
        with torch.inference_mode():
            ref = wrapper(*args).numpy()
        out = np.asarray(run(args))
        if out.shape != ref.shape:
            raise RuntimeError(f"output shape {out.shape} != eager {ref.shape} for B={batch}, T={t}")
        worst = max(worst, float(np.abs(out - ref).max()))
        shapes.append([batch, t])
    if not worst <= VERIFY_ATOL:
        raise RuntimeError(f"outputs differ from the eager encoder by {worst:.3g} (> {VERIFY_ATOL})")
    return {"max_abs_diff": worst, "checked_shapes_BT": shapes}


PRESTO_METHOD = "presto (published weights)"


def _export_int8(tmp: Path, wrapper: TensorEncoder, encoder: PixelTimeSeriesEncoder) -> dict[str, Any]:
    """Quantise ``encoder.onnx`` to int8 and measure its agreement with the eager fp32 encoder."""
    import onnxruntime as ort

    from cropssl.backends import cosine_agreement, quantize_int8

    path = tmp / FORMAT_FILES["onnx-int8"]
    quantize_int8(tmp / ONNX_FILE, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst_cos, worst_abs = 1.0, 0.0
    for batch, t in ((64, min(12, encoder.max_T)), (16, min(7, encoder.max_T))):
        args = example_inputs(encoder, batch, t, seed=batch + t)
        with torch.inference_mode():
            ref = wrapper(*args).numpy()
        out = sess.run(None, {n: a.numpy() for n, a in zip(INPUT_NAMES, args, strict=True)})[0]
        worst_cos = min(worst_cos, cosine_agreement(out, ref))
        worst_abs = max(worst_abs, float(np.abs(out - ref).max()))
    return {"min_cosine": worst_cos, "max_abs_diff": worst_abs, "quantization": "dynamic int8 (onnxruntime)"}


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


def _read_checkpoint(ckpt_path: Path) -> dict[str, Any]:
    if str(ckpt_path) == "presto" or ckpt_path.name == "default_model.pt":
        from cropssl.evaluation.encoders import presto_path

        return _presto_checkpoint(presto_path(None if str(ckpt_path) == "presto" else ckpt_path))
    from cropssl.checkpointing import CheckpointError, read_encoder_checkpoint

    try:
        return read_encoder_checkpoint(ckpt_path)[0]
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc


def _model_card(config: Mapping[str, Any]) -> str:
    enc = config["encoder_config"]
    inputs = config["inputs"]
    lines = [
        f"# cropssl pixel time series encoder ({config['ssl_method']}, d={config['embed_dim']})",
        "",
        "A Presto-compatible transformer that embeds one pixel's satellite time series (Sentinel-1, "
        "Sentinel-2, ERA5, SRTM, NDVI, Dynamic World, lat/lon) into a "
        f"{config['embed_dim']}-dimensional vector, pre-trained with the self-supervised method "
        f"`{config['ssl_method']}` by cropssl {config['cropssl_version']}. Intended for crop type mapping: "
        "train a light classifier (linear probe, k-NN, CatBoost) on the embeddings.",
        "",
        "## Files",
        "",
        "| file | content |",
        "|---|---|",
    ]
    desc = {
        WEIGHTS_FILE: "encoder weights (safetensors)",
        CONFIG_FILE: "architecture, input contract, lineage, metrics",
        README_FILE: "this model card",
        TORCHSCRIPT_FILE: "TorchScript module (no Python code needed)",
        ONNX_FILE: f"ONNX model (opset {config.get('onnx', {}).get('opset', '?')}), dynamic batch/time axes",
        CONTINUE_FILE: "full method state (student, teacher, heads) to continue pre-training",
    }
    for f in config["files"]:
        lines.append(f"| `{f}` | {desc.get(f, '')} |")
    if config.get("formats_failed"):
        lines += [
            "",
            "Formats that failed to export: " + ", ".join(f"`{k}`" for k in config["formats_failed"]),
        ]
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "from cropssl.export import load_encoder",
        "",
        f'encoder = load_encoder("{config["export_dir_name"]}")  # torch + safetensors only, eval mode',
        "emb = encoder(batch)  # a cropssl.schema.Batch, or (x, mask, month, latlon, dynamic_world)",
        "```",
        "",
        "TorchScript (needs only torch):",
        "",
        "```python",
        f'ts = torch.jit.load("{TORCHSCRIPT_FILE}")',
        "emb = ts(x, mask, month, latlon, dynamic_world)",
        "```",
        "",
        "ONNX Runtime (needs only onnxruntime + numpy):",
        "",
        "```python",
        f'sess = onnxruntime.InferenceSession("{ONNX_FILE}")',
        '(emb,) = sess.run(None, {"x": x, "mask": mask, "month": month, "latlon": latlon, '
        '"dynamic_world": dw})',
        "```",
        "",
        "From the command line: `cropssl-embed --encoder DIR INPUT... --out emb.parquet`.",
        "",
        "## Inputs",
        "",
        f"T (timesteps) between {inputs['timesteps']['min']} and {inputs['timesteps']['max']}, B any.",
        "",
        "| name | shape | dtype | meaning |",
        "|---|---|---|---|",
    ]
    for name, spec in inputs["tensors"].items():
        lines.append(f"| `{name}` | {spec['shape']} | {spec['dtype']} | {spec['meaning']} |")
    lines += [
        "",
        f"Bands (last axis of `x`): {', '.join(inputs['bands'])}.",
        "",
        "Normalisation: `x = (physical + add) / div` per band, then NDVI recomputed from the normalised "
        "B8 and B4, and 0 wherever `mask` is True (`cropssl.schema.normalize` / `Batch.from_samples`):",
        "",
        "| band | unit | add | div |",
        "|---|---|---|---|",
    ]
    norm = inputs["normalization"]
    for b, a, dv in zip(inputs["bands"], norm["add"], norm["div"]):
        lines.append(f"| {b} | {inputs['units'].get(b, '')} | {a:g} | {dv:g} |")
    lines += [
        "",
        "Channel groups (one token per group and timestep; static groups one token): "
        f"{', '.join(enc['groups'])}; Dynamic World token: {enc['use_dynamic_world']}; "
        f"lat/lon token: {enc['use_latlon']}.",
        "",
        "## Output",
        "",
        f"`{OUTPUT_NAME}`: `[B, {config['embed_dim']}]` float32, the LayerNorm of the mean of the final "
        "tokens over the non-missing tokens.",
        "",
        "## Architecture",
        "",
        "```json",
        json.dumps(enc, indent=2),
        "```",
        "",
        "## Lineage",
        "",
    ]
    parent = config["parent_checkpoint"]
    lines.append(
        f"Exported {config['exported']} from `{parent['path']}` (sha256 `{parent['sha256']}`, "
        f"step {parent.get('global_step')}, epoch {parent.get('epoch')})."
    )
    lines.append("")
    for i, rec in enumerate(config.get("lineage") or []):
        src = rec.get("parent") or {}
        origin = f", from {src.get('kind')} `{src.get('path')}`" if src else ""
        data = ", ".join(str(d.get("manifest", d.get("first"))) for d in rec.get("data", []))
        lines.append(
            f"{i + 1}. `{rec.get('method')}` run `{rec.get('run_dir')}` ({rec.get('start_mode')}{origin}), "
            f"{rec.get('steps', '?')} steps, started {rec.get('started')}; data: {data or '?'}"
        )
    lines += ["", "## Metrics at export", ""]
    metrics = config.get("metrics") or {}
    if metrics:
        lines += ["| metric | value | source |", "|---|---|---|"]
        for k, v in metrics.items():
            lines.append(f"| {k} | {v} | {config.get('metrics_sources', {}).get(k, '')} |")
    else:
        lines.append("None recorded.")
    lines += [
        "",
        f"Verification at export: TorchScript / ONNX outputs within {VERIFY_ATOL} of the eager encoder "
        "(see `config.json` `verification`).",
        "",
    ]
    int8 = (config.get("verification") or {}).get("onnx-int8")
    if int8:
        lines += [
            f"int8 (`{FORMAT_FILES['onnx-int8']}`, {int8['quantization']}): smallest cosine similarity "
            f"to the fp32 encoder {int8['min_cosine']:.4f}, largest absolute difference "
            f"{int8['max_abs_diff']:.3g} "
            "(random normalised inputs with missing values, at export). Check it on your own pixels before "
            "deploying: `cropssl.load_encoder(DIR, backend='onnx-int8')`.",
            "",
        ]
    return "\n".join(lines)


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
    ckpt = _read_checkpoint(ckpt_path)
    presto = ckpt["cropssl"]["method"] == PRESTO_METHOD
    if presto:  # the published weights: no training state to continue (use start.source=presto)
        from cropssl.evaluation.encoders import presto_path

        ckpt_path = presto_path(None if str(ckpt_path) == "presto" else ckpt_path)
        continue_bundle = False
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    meta = ckpt["cropssl"]
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
    enc_cfg = dict(meta["encoder_config"])
    try:
        encoder = PixelTimeSeriesEncoder(**enc_cfg)
        encoder.load_state_dict(enc_state, strict=True)
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ExportError(
            f"the encoder weights of {ckpt_path} do not match its encoder_config {enc_cfg}: {exc}"
        ) from exc
    encoder.eval()
    enc_cfg = encoder.config
    wrapper = TensorEncoder(encoder).eval()

    sha = sha256_file(ckpt_path)
    global_step = ckpt.get("global_step")
    all_metrics: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for k, v in ({} if presto else _logged_metrics(ckpt_path, global_step)).items():
        all_metrics[k] = v["value"]
        sources[k] = f"metrics.csv, step {v['step']}"
    for k, v in _callback_metrics(ckpt).items():
        all_metrics[k] = v
        sources[k] = "checkpoint callback"
    for k, v in (metrics or {}).items():
        all_metrics[str(k)] = jsonable(v)
        sources[str(k)] = "export argument"

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o755)
        save_file(
            {k: v.detach().contiguous() for k, v in encoder.state_dict().items()},
            str(tmp / WEIGHTS_FILE),
            metadata={"format": EXPORT_FORMAT, "cropssl_version": __version__},
        )
        files = [WEIGHTS_FILE, CONFIG_FILE, README_FILE]
        written = ["safetensors"]
        failed: dict[str, str] = {}
        verification: dict[str, Any] = {}
        onnx_info: dict[str, Any] = {}
        args = example_inputs(encoder)

        if "torchscript" in formats:
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    traced = torch.jit.trace(wrapper, args, check_trace=False)
                    torch.jit.save(traced, str(tmp / TORCHSCRIPT_FILE))
                    loaded = torch.jit.load(str(tmp / TORCHSCRIPT_FILE))

                def run_ts(a: tuple[Tensor, ...], m: Any = loaded) -> np.ndarray:
                    with torch.inference_mode():
                        return m(*a).numpy()

                verification["torchscript"] = _verify(run_ts, wrapper, encoder)
                files.append(TORCHSCRIPT_FILE)
                written.append("torchscript")
            except Exception as exc:
                (tmp / TORCHSCRIPT_FILE).unlink(missing_ok=True)
                failed["torchscript"] = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"TorchScript export failed, skipped: {failed['torchscript']}", stacklevel=2)
                print(
                    f"WARNING: TorchScript export failed, skipped: {failed['torchscript']}", file=sys.stderr
                )

        if "onnx" in formats:
            try:
                try:
                    import onnxruntime as ort
                except ImportError:
                    ort = None

                def check_onnx(path: Path) -> dict[str, Any]:
                    if ort is None:
                        return {"skipped": "onnxruntime not installed"}
                    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

                    def run_onnx(a: tuple[Tensor, ...]) -> np.ndarray:
                        return sess.run(None, {n: t.numpy() for n, t in zip(INPUT_NAMES, a, strict=True)})[0]

                    return _verify(run_onnx, wrapper, encoder)

                used, opset, verification["onnx"] = _export_onnx(
                    wrapper, args, tmp / ONNX_FILE, onnx_opset, onnx_exporter, check_onnx
                )
                onnx_info = {
                    "file": ONNX_FILE,
                    "opset": opset,
                    "exporter": used,
                    "inputs": list(INPUT_NAMES),
                    "output": OUTPUT_NAME,
                    "dynamic_axes": {
                        "batch": "all inputs, axis 0",
                        "time": "x, mask, month, dynamic_world, axis 1",
                    },
                }
                files.append(ONNX_FILE)
                written.append("onnx")
            except Exception as exc:
                for f in tmp.glob(f"{ONNX_FILE}*"):
                    f.unlink()
                failed["onnx"] = str(exc)
                msg = f"ONNX export failed, encoder.onnx not written (the other formats are): {exc}"
                warnings.warn(msg, stacklevel=2)
                print(f"WARNING: {msg}", file=sys.stderr)

        if "onnx-int8" in formats:
            try:
                if "onnx" not in written:
                    raise RuntimeError(
                        "needs the fp32 ONNX model (--format onnx,onnx-int8), which was not written"
                    )
                verification["onnx-int8"] = _export_int8(tmp, wrapper, encoder)
                files.append(FORMAT_FILES["onnx-int8"])
                written.append("onnx-int8")
            except Exception as exc:
                (tmp / FORMAT_FILES["onnx-int8"]).unlink(missing_ok=True)
                failed["onnx-int8"] = str(exc)
                msg = f"int8 ONNX export failed, {FORMAT_FILES['onnx-int8']} not written: {exc}"
                warnings.warn(msg, stacklevel=2)
                print(f"WARNING: {msg}", file=sys.stderr)

        continue_info: dict[str, Any] | None = None
        if continue_bundle:
            full = {k: v.detach().contiguous().clone() for k, v in state.items() if isinstance(v, Tensor)}
            save_file(
                full,
                str(tmp / CONTINUE_FILE),
                metadata={"format": "cropssl-continue", "method": str(meta.get("method"))},
            )
            run_config = meta.get("run_config") or {}
            continue_info = {
                "file": CONTINUE_FILE,
                "sha256": sha256_file(tmp / CONTINUE_FILE),
                "method": meta.get("method"),
                "method_config": jsonable(
                    run_config.get("method") if isinstance(run_config, Mapping) else None
                ),
                "global_step": global_step,
                "epoch": ckpt.get("epoch"),
                "num_tensors": len(full),
                "has_teacher": any(k.startswith("teacher.") for k in full),
                "prefixes": sorted({k.split(".", 1)[0] for k in full}),
                "run_config": jsonable(run_config),
            }
            files.append(CONTINUE_FILE)

        parent = {
            "kind": "presto" if presto else "checkpoint",
            "path": str(ckpt_path.resolve()),
            "sha256": sha,
            "global_step": global_step,
            "epoch": ckpt.get("epoch"),
            "encoder": "teacher" if teacher else "student",
        }
        lineage = [dict(r) for r in jsonable(meta.get("lineage") or [])]
        if lineage:
            lineage[-1]["exported_from"] = {"path": parent["path"], "sha256": sha, "global_step": global_step}
        config: dict[str, Any] = {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "architecture": "cropssl.encoder.PixelTimeSeriesEncoder",
            "encoder_config": enc_cfg,
            "embed_dim": encoder.embed_dim,
            "ssl_method": meta.get("method"),
            "inputs": {
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
            },
            "output": {"name": OUTPUT_NAME, "shape": f"[B, {encoder.embed_dim}]", "dtype": "float32"},
            "files": files,
            "formats": written,
            "formats_failed": failed,
            "torchscript": {"file": TORCHSCRIPT_FILE, "method": "torch.jit.trace"}
            if "torchscript" in written
            else {},
            "onnx": onnx_info,
            "verification": verification,
            "parent_checkpoint": parent,
            "lineage": lineage,
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
        (tmp / README_FILE).write_text(_model_card(config))
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return config
