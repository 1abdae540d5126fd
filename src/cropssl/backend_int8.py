"""Eager PyTorch with int8 matrix products: the ``torch-int8`` backend of an exported encoder.

The transformer blocks of the fp32 encoder are quantised with PyTorch 2 export quantisation (torchao's
X86 Inductor quantiser: static per-tensor uint8 activations, per-channel int8 weights, run by oneDNN's
VNNI kernels) and compiled with ``torch.compile`` (Inductor, frozen weights, dynamic sequence length);
the token embedding, the token dropping of the eager encoder (no Dynamic World tokens without Dynamic
World input, missing tokens compacted away) and the chunking stay as they are. Nothing is exported for
it: it is built from the export's fp32 weights when loaded.

Static quantisation needs the range of every activation, so it is **calibrated on the first pixels it
embeds** (the data being mapped; or an explicit :meth:`TorchInt8Encoder.calibrate`). The int8 layers
read LayerNorm outputs or their own products, so the ranges hardly depend on the data (calibrating the
published Presto weights on the reference pixels scaled by 0, 100 or 1,000 keeps cosine 0.9993 on the
true pixels). A calibration that does not cover later data could still clip it, so every call also
embeds a few of its pixels in fp32 and, when their cosine to the int8 embeddings falls under
:data:`~cropssl.backends.INT8_MIN_COSINE`, returns the fp32 embeddings of the whole batch instead
(warning once; :attr:`TorchInt8Encoder.fallbacks` counts them).

Cosine is a weak measure here: Presto's embeddings of different pixels are close to each other, and the
int8 error (cosine >= 0.9998) is still a median 4% of each dimension's spread over real pixels; frozen
probes on held-out regions change (``experiments/benchmarks/README_vs_presto.md``). The backend is
therefore opt-in: check it on labelled pixels (``cropssl-evaluate efficiency.backend=torch-int8
efficiency.embed=true``).

Needs torchao and a C++ compiler (Inductor compiles the graph; the first call takes seconds).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from cropssl.backends import INT8_MIN_COSINE, BackendError, InferenceOnly
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.layers import drop_padding
from cropssl.schema import Batch

__all__ = ["TorchInt8Encoder", "int8_unavailable"]

CPP_LOG = "torch.utils.cpp_extension"


def int8_unavailable() -> str | None:
    """Why the ``torch-int8`` backend cannot run on this machine (None if it can)."""
    try:
        _import_torchao()
    except ImportError:
        return "torchao is not installed (pip install torchao)"
    if shutil.which("g++") is None and shutil.which("c++") is None:
        return "no C++ compiler found (torch.compile needs g++ to build the int8 graph)"
    return None


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Raise torch loggers to ERROR for a while.

    torchao's import logs a deprecation of torch's own, and Inductor's C++ build notes that a CPU machine
    has no CUDA; neither is the user's concern.
    """
    logs = [logging.getLogger(name) for name in loggers]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(logs, levels, strict=True):
            log.setLevel(level)


def _import_torchao() -> tuple[Any, Any, Any]:
    """The PT2E quantisation entry points of torchao."""
    with _quiet("torch.utils._pytree"):
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    return xiq, prepare_pt2e, convert_pt2e


class _Blocks(nn.Module):
    """The encoder's ``encode`` then ``pool`` on ``[C, n, d]`` tokens, of a copy of it.

    A copy: whatever quantisation and weight freezing do to it, the fp32 encoder that the calls are
    checked against stays as it is.
    """

    def __init__(self, encoder: PixelTimeSeriesEncoder) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)

    def forward(self, tokens: Tensor, pad: Tensor) -> Tensor:
        return self.encoder.pool(self.encoder.encode(tokens, pad), pad)


class TorchInt8Encoder(InferenceOnly):
    """An fp32 encoder whose blocks run in int8 once calibrated (``encoder(batch) -> [B, d]``).

    Args:
        encoder: The fp32 encoder (kept for the token embedding and the per-call check).
        export_config: The export's ``config.json`` (exposed as ``export_config``).

    """

    chunk = 32
    """Pixels per pass through the blocks (as the eager encoder's ``inference_chunk``)."""
    check_pixels = 4
    """Pixels of every call also embedded in fp32 to check the int8 result (0: no check)."""
    calibration_pixels = 512
    """Pixels of the first call (or :meth:`calibrate`'s batch) whose activations set the int8 ranges."""
    min_cosine = INT8_MIN_COSINE
    """Checked pixels below this cosine to fp32 send the batch to fp32."""

    def __init__(self, encoder: PixelTimeSeriesEncoder, export_config: dict[str, Any]) -> None:
        self.fp32 = encoder.eval()
        self.embed_dim = encoder.d
        self.max_T = encoder.max_T
        self.export_config = export_config
        self.fallbacks = 0
        self.calibrated_on = 0
        self.setup_seconds = 0.0
        """Seconds of the first call: calibration, and Inductor compiling the int8 graph."""
        self._int8: Any = None

    def _chunks(self, batch: Batch) -> list[tuple[Tensor, Tensor]]:
        """The tokens of ``batch`` in chunks of exactly ``chunk`` rows, missing tokens compacted away."""
        tok, pad = self.fp32.embed_tokens(batch, skip_absent_dynamic_world=True)
        out = []
        for i in range(0, len(tok), self.chunk):
            t, p = drop_padding(tok[i : i + self.chunk], pad[i : i + self.chunk])
            if len(t) < self.chunk:  # fully padded filler rows keep one compiled batch size
                fill = self.chunk - len(t)
                t = torch.cat([t, t.new_zeros(fill, *t.shape[1:])])
                p = torch.cat([p, p.new_ones(fill, p.shape[1])])
            out.append((t.contiguous(), p.contiguous()))
        return out

    @torch.no_grad()
    def calibrate(self, batch: Batch) -> None:
        """Quantise the blocks with activation ranges observed on (the first pixels of) ``batch``.

        Raises:
            ValueError: the batch is empty.

        """
        if len(batch) == 0:
            raise ValueError("cannot calibrate the int8 encoder on an empty batch")
        xiq, prepare_pt2e, convert_pt2e = _import_torchao()
        batch = batch.select(slice(0, self.calibration_pixels))
        chunks = self._chunks(batch)
        n = torch.export.Dim("n", min=2, max=max(self.fp32.num_tokens(self.max_T), 3))
        example = tuple(x.clone() for x in chunks[0])
        if example[0].shape[1] < 2:  # the export's dynamic length must start at 2
            example = (example[0].repeat(1, 2, 1), example[1].repeat(1, 2))
        graph = torch.export.export(_Blocks(self.fp32).eval(), example, dynamic_shapes=({1: n}, {1: n}))
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph.module(), quantizer)
        for tok, pad in chunks:
            prepared(tok, pad)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchao's own tensor-copy warnings
            self._int8 = torch.compile(convert_pt2e(prepared), dynamic=True)
        self.calibrated_on = len(batch)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Tensor:
        """Embed a normalised batch (calibrating on it first if not calibrated yet).

        Raises:
            BackendError: the batch has more timesteps than the encoder accepts, or the int8 graph does not
                compile on this machine.

        """
        if batch.x.shape[1] > self.max_T:
            raise BackendError(
                f"the encoder accepts at most T={self.max_T} timesteps, got {batch.x.shape[1]}; export an "
                "encoder with a larger max_T"
            )
        if len(batch) == 0:
            return torch.zeros(0, self.embed_dim)
        first = self._int8 is None
        t0 = time.perf_counter()
        if first:
            self.calibrate(batch)
        import torch._inductor.config as inductor_config

        # Inductor compiles on the first call of each shape; frozen weights let it pre-pack them for oneDNN
        try:
            with warnings.catch_warnings(), inductor_config.patch(freezing=True), _quiet(CPP_LOG):
                warnings.simplefilter("ignore", UserWarning)
                out = torch.cat([self._int8(t, p) for t, p in self._chunks(batch)])[: len(batch)]
        except Exception as exc:  # Inductor / compiler failures: name them, point to the fp32 backend
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise BackendError(
                f"backend torch-int8: torch.compile could not build the int8 graph on this machine "
                f"({type(exc).__name__}: {line[:200]}); use --backend torch"
            ) from exc
        if first:
            self.setup_seconds = time.perf_counter() - t0
        if self.check_pixels <= 0:
            return out
        idx = torch.linspace(0, len(batch) - 1, min(self.check_pixels, len(batch))).round().long()
        ref = self.fp32(batch.select(idx))
        cos = torch.nn.functional.cosine_similarity(out[idx], ref, dim=1, eps=1e-12)
        if float(cos.min()) < self.min_cosine:
            if self.fallbacks == 0:
                warnings.warn(
                    f"int8 embeddings reached cosine {float(cos.min()):.4f} < {self.min_cosine} to fp32 on "
                    f"checked pixels (calibrated on {self.calibrated_on} pixels that do not cover this "
                    "data): this batch and any other like it is embedded in fp32; call calibrate() on "
                    "representative pixels to get int8 speed back",
                    stacklevel=2,
                )
            self.fallbacks += 1
            return self.fp32(batch)
        return out
