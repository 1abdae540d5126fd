"""Inference backends of an exported encoder: eager PyTorch (fp32, bf16, int8) and ONNX Runtime (fp32, int8).

:func:`load_backend` gives an object that embeds a :class:`~cropssl.schema.Batch` like the eager encoder
(``backend(batch) -> [B, d]`` tensor), whatever runs underneath:

* ``torch``: the eager :class:`~cropssl.encoder.PixelTimeSeriesEncoder` (drops missing tokens per batch);
* ``torch-bf16``: the eager encoder under CPU autocast: matrix products and attention in bfloat16 with
  fp32 accumulation, LayerNorm, softmax statistics and the pooled output in fp32 (oneDNN's AVX-512 BF16
  kernels: about 1.4x eager fp32 on the Presto-sized encoder, cosine >= 0.9999 to fp32 on real pixels;
  bfloat16 keeps fp32's exponent range, so no value overflows; nothing to export or compile);
* ``torch-int8``: the eager encoder with its transformer blocks quantised to int8 and compiled
  (:mod:`cropssl.backend_int8`; built from the fp32 weights when loaded, calibrated on the first pixels
  it embeds, every call checked against fp32 on a few pixels; needs torchao and a C++ compiler);
* ``onnx``: ``encoder.onnx`` in ONNX Runtime (fp32; verified against eager at export, 1e-4);
* ``onnx-int8``: ``encoder.int8.onnx``, weights and activations of the linear layers in int8 (ONNX
  Runtime's dynamic quantisation, ``cropssl-export --format onnx-int8``; its agreement with fp32 is
  measured at export and written in the model card);
* ``auto``: the fastest of the backends the export directory holds (torch, torch-bf16, onnx, onnx-int8; not
  torch-int8, whose compile and calibration take seconds and need the data) that this machine can run,
  timed here on a dense 64-pixel batch when loading (int8 only if it passed its agreement check at
  export, bf16 only if it reaches :data:`BF16_MIN_COSINE` to fp32 on that batch); it prints the measured
  px/s and why a backend was left out.

Only torch, safetensors and (for ONNX) onnxruntime, (for torch-int8) torchao are needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropssl.artifacts import INT8_FILE, ONNX_FILE
from cropssl.schema import DW_MISSING, Batch

BACKENDS = ("auto", "torch", "torch-bf16", "torch-int8", "onnx", "onnx-int8")
INPUT_NAMES = ("x", "mask", "month", "latlon", "dynamic_world")
#: Smallest cosine similarity to the fp32 encoder an int8 model must reach at export to be used by auto.
INT8_MIN_COSINE = 0.995
#: Smallest cosine similarity to fp32 the bf16 backend must reach on auto's timing batch to be used by it.
BF16_MIN_COSINE = 0.9999


class BackendError(ValueError):
    """A backend cannot be used with this export directory (the message names the command that adds it)."""


class InferenceOnly:
    """What the backends share with the eager encoder's API besides the call: no training mode."""

    training = False

    def eval(self) -> InferenceOnly:
        """No-op (API parity with the eager encoder)."""
        return self

    def train(self, mode: bool = True) -> InferenceOnly:
        """No-op (inference only)."""
        return self


class OnnxEncoder(InferenceOnly):
    """An ONNX Runtime session with the encoder's call signature (``encoder(batch) -> [B, d]``).

    Args:
        path: The ``.onnx`` file.
        config: The export's ``config.json``.
        threads: Intra-op threads (default: torch's thread count, so backends compare at equal threads).

    """

    def __init__(self, path: Path, config: dict[str, Any], threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        threads = int(threads or torch.get_num_threads())
        cores = os.cpu_count() or 1
        if threads > cores:
            import warnings

            warnings.warn(
                f"{threads} threads on a machine with {cores} cores: they compete for the cores and run "
                f"slower; use at most {cores}",
                stacklevel=2,
            )
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting of idle threads after a run: it would take the cores from the caller's next work
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        enc = dict(config.get("encoder_config") or config["encoder"])
        self.embed_dim = int(enc["d"])
        self.max_T = int(enc.get("max_T", 72))
        self.export_config = config
        self.path = path

    def __call__(self, batch: Batch) -> torch.Tensor:
        """Embed a normalised batch.

        Raises:
            BackendError: the batch has more timesteps than the exported model accepts.

        """
        if batch.x.shape[1] > self.max_T:
            raise BackendError(
                f"{self.path} accepts at most T={self.max_T} timesteps, got {batch.x.shape[1]}; export an "
                "encoder with a larger max_T"
            )
        dw = (
            batch.dynamic_world
            if batch.dynamic_world is not None
            else torch.full(batch.month.shape, DW_MISSING)
        )
        feeds = {
            "x": batch.x.float().numpy(),
            "mask": batch.mask.bool().numpy(),
            "month": batch.month.long().numpy(),
            "latlon": batch.latlon.float().numpy(),
            "dynamic_world": dw.long().numpy(),
        }
        n, step = len(feeds["x"]), self.chunk
        parts = [
            self.session.run(None, {k: v[i : i + step] for k, v in feeds.items()})[0]
            for i in range(0, n, step)
        ]
        return torch.from_numpy(np.concatenate(parts) if len(parts) != 1 else np.asarray(parts[0]))

    chunk = 32
    """Pixels per session call (activations that stay in the CPU caches: faster than whole batches)."""


class TorchBf16Encoder(InferenceOnly):
    """The eager encoder under bfloat16 CPU autocast (``encoder(batch) -> [B, d]`` fp32 tensor).

    Args:
        encoder: The fp32 encoder (its weights stay fp32; autocast casts them per matrix product).
        export_config: The export's ``config.json`` (exposed as ``export_config``).

    """

    def __init__(self, encoder: Any, export_config: dict[str, Any]) -> None:
        self.fp32 = encoder.eval()
        self.embed_dim = encoder.d
        self.max_T = encoder.max_T
        self.export_config = export_config

    @torch.no_grad()
    def __call__(self, batch: Batch) -> torch.Tensor:
        """Embed a normalised batch (the encoder's own checks, token dropping and chunking apply)."""
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.fp32(batch).float()


def bf16_unavailable() -> str | None:
    """Why the ``torch-bf16`` backend cannot run on this machine (None if it can)."""
    if not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "this CPU has no bfloat16 matrix kernels in oneDNN (they need AVX-512 or newer)"
    return None


def _available(d: Path, backend: str, config: dict[str, Any]) -> str | None:
    """Why ``backend`` cannot be used from ``d`` (None if it can)."""
    if backend == "torch":
        return None
    if backend == "torch-bf16":
        return bf16_unavailable()
    if backend == "torch-int8":
        from cropssl.backend_int8 import int8_unavailable

        return int8_unavailable()
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install onnxruntime)"
    file = ONNX_FILE if backend == "onnx" else INT8_FILE
    if not (d / file).exists():
        fmt = "onnx" if backend == "onnx" else "onnx,onnx-int8"
        return f"{d} has no {file}; add it with `cropssl-export SOURCE --out {d} --format {fmt} --overwrite`"
    if backend == "onnx-int8":
        cos = ((config.get("verification") or {}).get("onnx-int8") or {}).get("min_cosine")
        if cos is not None and cos < INT8_MIN_COSINE:
            return f"its int8 model reached cosine {cos:.4f} < {INT8_MIN_COSINE} to fp32 at export"
    return None


def load_backend(path: str | os.PathLike[str], backend: str = "torch", threads: int | None = None) -> Any:
    """The encoder of an export directory on a backend (see the module docstring).

    Args:
        path: Export directory (``cropssl-export``).
        backend: ``auto``, ``torch``, ``torch-bf16``, ``torch-int8``, ``onnx`` or ``onnx-int8``.
        threads: ONNX Runtime intra-op threads (default torch's).

    Returns:
        An object with ``__call__(batch) -> [B, d]``, ``embed_dim``, ``max_T``, ``export_config`` and
        ``backend`` (the backend actually used).

    Raises:
        BackendError: an unknown backend, or one the directory / machine cannot provide (naming the export
            command that adds it).

    """
    from cropssl.export_dir import read_export_config

    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    d = Path(path)
    config = read_export_config(d)
    if backend == "auto":
        return _fastest(d, config, threads)
    why = _available(d, backend, config)
    if why is not None:
        raise BackendError(f"backend {backend} unavailable: {why}")
    enc = _open(d, backend, config, threads)
    enc.backend = backend  # type: ignore[attr-defined]
    return enc


def _open(d: Path, backend: str, config: dict[str, Any], threads: int | None) -> Any:
    from cropssl.export_dir import load_encoder

    if backend == "torch":
        return load_encoder(d)
    if backend == "torch-bf16":
        return TorchBf16Encoder(load_encoder(d), config)
    if backend == "torch-int8":
        from cropssl.backend_int8 import TorchInt8Encoder

        return TorchInt8Encoder(load_encoder(d), config)
    return OnnxEncoder(d / (ONNX_FILE if backend == "onnx" else INT8_FILE), config, threads)


def _px_per_s(runner: Any, timesteps: int, pixels: int = 64, repeats: int = 3) -> float:
    """Best-of-``repeats`` px/s of a backend on a dense batch (after one warm-up call)."""
    import time

    from cropssl.profiling import dense_batch

    batch = dense_batch(pixels, timesteps)
    best = float("inf")
    with torch.inference_mode():
        runner(batch)
        for _ in range(repeats):
            t0 = time.perf_counter()
            runner(batch)
            best = min(best, time.perf_counter() - t0)
    return pixels / best


def _fastest(d: Path, config: dict[str, Any], threads: int | None) -> Any:
    """``auto``: time every backend the directory and machine provide on this CPU; keep the fastest."""
    reasons, candidates = [], ["torch"]
    for candidate in ("torch-bf16", "onnx", "onnx-int8"):
        why = _available(d, candidate, config)
        if why is None:
            candidates.append(candidate)
        else:
            reasons.append(f"{candidate}: {why}")
    runners = {c: _open(d, c, config, threads) for c in candidates if c != "torch-bf16"}
    if "torch-bf16" in candidates:  # the same eager encoder under autocast
        runners["torch-bf16"] = TorchBf16Encoder(runners["torch"], config)
        from cropssl.profiling import dense_batch

        with torch.inference_mode():
            probe = dense_batch(64, 12)
            cos = cosine_agreement(runners["torch-bf16"](probe).numpy(), runners["torch"](probe).numpy())
        if cos < BF16_MIN_COSINE:
            del runners["torch-bf16"]
            reasons.append(f"torch-bf16: cosine {cos:.5f} < {BF16_MIN_COSINE} to fp32 on a dense batch")
    if len(runners) == 1:
        print(f"backend auto: eager PyTorch ({'; '.join(reasons)})", file=sys.stderr)
        runners["torch"].backend = "torch"
        return runners["torch"]
    rates = {c: _px_per_s(r, timesteps=12) for c, r in runners.items()}
    best = max(rates, key=rates.__getitem__)
    measured = ", ".join(f"{c} {v:,.0f}" for c, v in rates.items())
    skipped = f"; not available: {'; '.join(reasons)}" if reasons else ""
    print(f"backend auto: {best} (measured px/s on this CPU: {measured}{skipped})", file=sys.stderr)
    enc = runners[best]
    enc.backend = best
    enc.auto_rates = rates
    return enc


def add_backend_argument(parser: Any, what: str = "the export directory") -> None:
    """The ``--backend`` flag of the CLIs that embed with an export."""
    parser.add_argument(
        "--backend",
        choices=list(BACKENDS),
        default="torch",
        help=f"inference backend of {what}: torch (eager, default), torch-bf16 (eager, bfloat16 matrix "
        "products), torch-int8 (int8 blocks, compiled; calibrated on the first pixels), onnx, onnx-int8, "
        "auto (the fastest of torch, torch-bf16 and the exported ONNX files)",
    )


def quantize_int8(onnx_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantisation of an fp32 ONNX encoder (linear layers / MatMuls; ONNX Runtime's tools)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser warns about every integer tensor it (rightly) skips
    try:
        quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def cosine_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest per-row cosine similarity between two ``[N, d]`` embedding matrices."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float((num / np.maximum(den, 1e-12)).min())
