"""Tracing an encoder to TorchScript / ONNX, checking the traced formats, int8 quantisation.

The ONNX half of :mod:`cropssl.export`: a tensor-only wrapper of the encoder, example inputs with missing
values, the two ONNX exporters (TorchScript-based first, torch.export-based as fallback), the check
that every written format reproduces the eager encoder, and the int8 model with its agreement.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cropssl.artifacts import FORMAT_FILES, ONNX_FILE, TORCHSCRIPT_FILE
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.schema import BANDS, DW_CLASSES

INPUT_NAMES: tuple[str, ...] = ("x", "mask", "month", "latlon", "dynamic_world")
OUTPUT_NAME = "embeddings"
#: Largest |difference| between the exported formats and the eager encoder accepted at export time.
VERIFY_ATOL = 1e-4


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


def export_onnx(
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


def verify_format(run: Any, wrapper: TensorEncoder, encoder: PixelTimeSeriesEncoder) -> dict[str, Any]:
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


def export_int8(tmp: Path, wrapper: TensorEncoder, encoder: PixelTimeSeriesEncoder) -> dict[str, Any]:
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


def write_formats(
    tmp: Path, encoder: PixelTimeSeriesEncoder, formats: Sequence[str], opset: int, exporter: str
) -> dict[str, Any]:
    """Write and verify TorchScript / ONNX / int8 as asked; a format that fails is skipped with a warning.

    Returns:
        ``files`` and ``formats`` written, ``failed`` (format -> reason), ``verification`` per format and
        the ``onnx`` description.

    """
    wrapper = TensorEncoder(encoder).eval()
    args = example_inputs(encoder)
    done: dict[str, Any] = {"files": [], "formats": ["safetensors"], "failed": {}, "verification": {},
                            "onnx": {}}  # fmt: skip
    steps = {
        "torchscript": lambda: _write_torchscript(tmp, wrapper, encoder, args),
        "onnx": lambda: _write_onnx(tmp, wrapper, encoder, args, opset, exporter, done),
        "onnx-int8": lambda: _write_int8(tmp, wrapper, encoder, done),
    }
    for fmt, step in steps.items():
        if fmt not in formats:
            continue
        try:
            done["verification"][fmt] = step()
            done["files"].append(FORMAT_FILES[fmt])
            done["formats"].append(fmt)
        except Exception as exc:
            for f in tmp.glob(f"{FORMAT_FILES[fmt]}*"):
                f.unlink()
            done["failed"][fmt] = f"{type(exc).__name__}: {exc}"
            shown = {"torchscript": "TorchScript", "onnx": "ONNX", "onnx-int8": "int8 ONNX"}[fmt]
            msg = f"{shown} export failed, {FORMAT_FILES[fmt]} not written (the other formats are): {exc}"
            warnings.warn(msg, stacklevel=3)
            print(f"WARNING: {msg}", file=sys.stderr)
    return done


def _write_torchscript(tmp: Path, wrapper: TensorEncoder, encoder: PixelTimeSeriesEncoder, args: Any) -> Any:
    """Trace, save, reload and verify the TorchScript encoder."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, args, check_trace=False)
        torch.jit.save(traced, str(tmp / TORCHSCRIPT_FILE))
        loaded = torch.jit.load(str(tmp / TORCHSCRIPT_FILE))

    def run_ts(a: tuple[Tensor, ...]) -> np.ndarray:
        with torch.inference_mode():
            return loaded(*a).numpy()

    return verify_format(run_ts, wrapper, encoder)


def _write_onnx(
    tmp: Path,
    wrapper: TensorEncoder,
    encoder: PixelTimeSeriesEncoder,
    args: Any,
    opset: int,
    exporter: str,
    done: dict[str, Any],
) -> Any:
    """Export the fp32 ONNX model, verify it with ONNX Runtime (when installed), describe it in ``done``."""
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

        return verify_format(run_onnx, wrapper, encoder)

    used, opset_used, verification = export_onnx(wrapper, args, tmp / ONNX_FILE, opset, exporter, check_onnx)
    done["onnx"] = {
        "file": ONNX_FILE,
        "opset": opset_used,
        "exporter": used,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "dynamic_axes": {"batch": "all inputs, axis 0", "time": "x, mask, month, dynamic_world, axis 1"},
    }
    return verification


def _write_int8(
    tmp: Path, wrapper: TensorEncoder, encoder: PixelTimeSeriesEncoder, done: dict[str, Any]
) -> Any:
    """Quantise the fp32 ONNX model written before (``--format onnx,onnx-int8``) and verify it."""
    if "onnx" not in done["formats"]:
        raise RuntimeError("needs the fp32 ONNX model (--format onnx,onnx-int8), which was not written")
    return export_int8(tmp, wrapper, encoder)
