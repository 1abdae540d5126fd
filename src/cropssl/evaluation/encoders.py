"""Resolve encoder specs for evaluation, embed samples, and measure an encoder's cost.

An encoder *spec* is one of

* an export directory written by ``cropssl-export`` (``model.safetensors`` + ``config.json``);
* a cropssl checkpoint ``.ckpt`` (the encoder is rebuilt from ``checkpoint["cropssl"]["encoder_config"]``
  and loaded from the ``encoder.*`` weights);
* ``presto``: the published Presto weights, from ``$CROPSSL_PRESTO``, else
  ``../shared/presto/default_model.pt`` (relative to the working directory, then to the repository);
  a path ending in ``default_model.pt`` works too;
* ``random``: a randomly initialised encoder of a given architecture (seeded), the "no pre-training"
  reference.

:func:`resolve_encoder` returns a :class:`LoadedEncoder` (module in eval mode, display name, kind, source
path, sha256 and a fingerprint of the weights). :func:`check_compatible` refuses data an encoder cannot
take (name both); :func:`embed_samples` embeds :class:`~cropssl.schema.PixelSamples` in batches;
:func:`measure_throughput` and :func:`encoder_cost` measure CPU pixels/s and MACs per pixel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cropssl.artifacts import PRESTO_ENV, presto_path, sha256_file
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.schema import BAND_GROUPS, BANDS, STATIC_GROUPS, Batch, PixelSamples

#: Environment variable with the path of Presto's ``default_model.pt``.
KINDS: tuple[str, ...] = ("export", "checkpoint", "presto", "random")


class EncoderDataError(ValueError):
    """An encoder cannot take the data (bands, timesteps): the message names both."""


@dataclasses.dataclass
class EncoderSpec:
    """An encoder to evaluate, as written in a config.

    Attributes:
        spec: Export directory, ``.ckpt`` path, ``presto`` (or a Presto ``default_model.pt`` path) or
            ``random``.
        name: Display name (default: derived from the spec).
        config: Architecture of a ``random`` encoder (:class:`PixelTimeSeriesEncoder` arguments; default
            Presto's architecture).
        seed: Initialisation seed of a ``random`` encoder.

    """

    spec: str
    name: str | None = None
    config: dict[str, Any] | None = None
    seed: int = 0


@dataclasses.dataclass
class LoadedEncoder:
    """A resolved encoder.

    Attributes:
        name: Display name (unique within an evaluation).
        spec: The spec it was resolved from.
        kind: ``export``, ``checkpoint``, ``presto`` or ``random``.
        encoder: The module, in eval mode.
        path: Source file or directory (None for ``random``).
        sha256: sha256 of the source weights file (None for ``random``).
        fingerprint: sha256 of the weights themselves (:func:`weights_fingerprint`).
        info: Extra facts (SSL method, lineage, export config, seed...).

    """

    name: str
    spec: str
    kind: str
    encoder: PixelTimeSeriesEncoder
    path: str | None
    sha256: str | None
    fingerprint: str
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (no module)."""
        return {
            "name": self.name,
            "spec": self.spec,
            "kind": self.kind,
            "path": self.path,
            "sha256": self.sha256,
            "fingerprint": self.fingerprint,
            "config": self.encoder.config,
            "embed_dim": self.encoder.embed_dim,
            "parameters": int(sum(p.numel() for p in self.encoder.parameters())),
            **self.info,
        }


def weights_fingerprint(module: torch.nn.Module) -> str:
    """sha256 over the names, shapes and values of a module's state dict (identifies embedding spaces)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def spec_kind(spec: str) -> str:
    """``export``, ``checkpoint``, ``presto`` or ``random`` for an encoder spec string.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a spec of no known kind.

    """
    if spec == "presto" or spec.endswith("default_model.pt"):
        return "presto"
    if spec == "random":
        return "random"
    p = Path(spec)
    if p.is_dir():
        return "export"
    if p.suffix in (".ckpt", ".pt", ".pth"):
        if not p.exists():
            raise FileNotFoundError(f"encoder checkpoint {p} does not exist")
        return "checkpoint"
    if not p.exists():
        raise FileNotFoundError(
            f"encoder {spec!r} is neither 'presto', 'random' nor an existing export directory or .ckpt file"
        )
    raise ValueError(
        f"cannot tell what encoder {spec!r} is: give an export directory (model.safetensors + config.json), "
        "a cropssl checkpoint (.ckpt), 'presto' or 'random'"
    )


def _default_name(spec: str, kind: str) -> str:
    if kind in ("presto", "random"):
        return kind
    p = Path(spec)
    if kind == "checkpoint" and p.parent.name == "checkpoints":  # runs/<run>/checkpoints/last.ckpt
        return f"{p.parent.parent.name}/{p.stem}"
    return p.name if kind == "export" else p.stem


def load_checkpoint_encoder(path: str | os.PathLike[str]) -> tuple[PixelTimeSeriesEncoder, dict[str, Any]]:
    """Rebuild the encoder of a cropssl checkpoint and load its ``encoder.*`` weights (strict).

    Returns:
        The encoder (eval mode) and the checkpoint's ``cropssl`` metadata.

    Raises:
        ValueError: the checkpoint has no cropssl metadata or no (matching) encoder weights.

    """
    from cropssl.checkpointing import read_encoder_checkpoint

    ckpt, state = read_encoder_checkpoint(path)
    meta = ckpt["cropssl"]
    encoder = PixelTimeSeriesEncoder(**dict(meta["encoder_config"]))
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the encoder weights of {path} do not match its encoder_config: {exc}") from exc
    return encoder.eval(), dict(meta)


def resolve_encoder(
    spec: str | EncoderSpec | Mapping[str, Any],
    *,
    name: str | None = None,
    random_config: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> LoadedEncoder:
    """Load the encoder a spec names.

    Args:
        spec: A spec string (see the module docstring), an :class:`EncoderSpec` or a mapping of its fields.
        name: Display name (overrides the spec's).
        random_config: Architecture of ``random`` encoders without their own ``config``.
        seed: Seed of ``random`` encoders given as strings.

    Returns:
        The :class:`LoadedEncoder`, in eval mode.

    Raises:
        FileNotFoundError: a missing path, or Presto weights not found.
        ValueError: an unknown spec or mismatching weights.

    """
    if isinstance(spec, Mapping):
        spec = EncoderSpec(**dict(spec))
    if isinstance(spec, str):
        spec = EncoderSpec(spec=spec, seed=seed)
    s = str(spec.spec)
    kind = spec_kind(s)
    display = name or spec.name or _default_name(s, kind)
    info: dict[str, Any] = {}
    if kind == "presto":
        path = presto_path(None if s == "presto" else s)
        encoder = PixelTimeSeriesEncoder.from_presto(path).eval()
        src, sha = str(path), sha256_file(path)
        info["ssl_method"] = "presto (published weights)"
    elif kind == "random":
        cfg = dict(spec.config if spec.config is not None else (random_config or {}))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            encoder = PixelTimeSeriesEncoder(**cfg).eval()
        src, sha = None, None
        info.update(ssl_method="none (random initialisation)", seed=spec.seed)
    elif kind == "export":
        from cropssl.artifacts import WEIGHTS_FILE
        from cropssl.export_dir import load_encoder

        encoder = load_encoder(s)
        config = dict(encoder.export_config)  # type: ignore[arg-type]
        src, sha = s, sha256_file(Path(s) / WEIGHTS_FILE)
        bands = (config.get("inputs") or {}).get("bands")
        info.update(ssl_method=config.get("ssl_method"), input_bands=bands, metrics=config.get("metrics"))
    else:
        encoder, meta = load_checkpoint_encoder(s)
        src, sha = s, sha256_file(Path(s))
        info.update(ssl_method=meta.get("method"))
    return LoadedEncoder(
        name=display,
        spec=s,
        kind=kind,
        encoder=encoder,
        path=src,
        sha256=sha,
        fingerprint=weights_fingerprint(encoder),
        info=info,
    )


def needed_bands(encoder: PixelTimeSeriesEncoder) -> list[str]:
    """Schema bands the encoder's channel groups read (NDVI included if its group is used)."""
    idx = sorted({i for g in encoder.groups for i in BAND_GROUPS[g]})
    return [BANDS[i] for i in idx]


def check_compatible(
    loaded: LoadedEncoder, samples: PixelSamples, data_name: str = "the data"
) -> dict[str, Any]:
    """Refuse data an encoder cannot embed; report groups the data never observes.

    Checks: the encoder's input bands (export ``config.json``) are the cropssl schema's bands, the data's
    T is within ``max_T``, and at least one of the encoder's channel groups is observed somewhere.

    Args:
        loaded: The encoder.
        samples: The data.
        data_name: How to name the data in messages.

    Returns:
        ``{"timesteps": T, "unobserved_groups": [...]}`` (groups entirely missing in the data).

    Raises:
        EncoderDataError: naming the encoder and the data.

    """
    enc = loaded.encoder
    bands = loaded.info.get("input_bands")
    if bands is not None and list(bands) != list(BANDS):
        raise EncoderDataError(
            f"encoder {loaded.name} ({loaded.spec}) expects input bands {list(bands)} but {data_name} has "
            f"the cropssl schema bands {list(BANDS)}"
        )
    t = samples.timesteps
    if t > enc.max_T:
        raise EncoderDataError(
            f"{data_name} has T={t} timesteps but encoder {loaded.name} ({loaded.spec}) accepts at most "
            f"max_T={enc.max_T}"
        )
    unobserved = []
    for g in enc.groups:
        cols = list(BAND_GROUPS[g])
        m = samples.mask[:, :1, cols] if g in STATIC_GROUPS else samples.mask[..., cols]
        if len(samples) and m.any(axis=-1).all():
            unobserved.append(g)
    if len(samples) and len(unobserved) == len(enc.groups):
        raise EncoderDataError(
            f"encoder {loaded.name} ({loaded.spec}) reads only channel groups {list(enc.groups)}, none of "
            f"which is observed in {data_name}"
        )
    return {"timesteps": t, "unobserved_groups": unobserved}


@torch.inference_mode()
def embed_samples(
    encoder: PixelTimeSeriesEncoder,
    samples: PixelSamples,
    batch_size: int = 1024,
    progress: bool = False,
    desc: str = "embedding",
) -> np.ndarray:
    """``[N, d]`` float32 embeddings of samples, in batches, in eval mode.

    Args:
        encoder: The encoder.
        samples: Samples in physical units (normalised here like training batches).
        batch_size: Samples per forward pass.
        progress: Show a tqdm progress bar on stderr.
        desc: Progress bar label.

    """
    from tqdm.auto import tqdm

    was = encoder.training
    encoder.eval()
    out = []
    with tqdm(total=len(samples), unit="px", desc=desc, disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(samples), batch_size):
            chunk = samples.select(slice(i, i + batch_size))
            out.append(encoder(Batch.from_samples(chunk)).float().numpy())
            bar.update(len(chunk))
    encoder.train(was)
    return np.concatenate(out) if out else np.zeros((0, encoder.embed_dim), np.float32)


@torch.inference_mode()
def measure_throughput(encoder: Any, timesteps: int = 12, batch_size: int = 256, repeats: int = 3) -> float:
    """CPU inference throughput in pixels per second (best of ``repeats`` timed forward passes).

    Uses a dense batch (every token present, the worst case) of normalised inputs, after one warm-up pass,
    with the current ``torch.get_num_threads()``. ``encoder``: a module or any ``Batch -> embeddings``
    callable (a backend of :mod:`cropssl.backends`).
    """
    from cropssl.profiling import dense_batch

    was = getattr(encoder, "training", False)
    if was:
        encoder.eval()
    batch = dense_batch(batch_size, timesteps)
    encoder(batch)  # warm-up
    best = float("inf")
    for _ in range(max(int(repeats), 1)):
        t0 = time.perf_counter()
        encoder(batch)
        best = min(best, time.perf_counter() - t0)
    if was:
        encoder.train(was)
    return batch_size / best


def encoder_cost(
    encoder: PixelTimeSeriesEncoder,
    timesteps: int = 12,
    batch_size: int = 256,
    repeats: int = 3,
    runner: Any | None = None,
) -> dict[str, Any]:
    """MACs per pixel and CPU pixels/s of an encoder at ``timesteps`` (see :func:`measure_throughput`).

    Args:
        encoder: The eager encoder (MACs, parameters).
        timesteps: Timesteps of the measured inputs.
        batch_size: Pixels per timed forward pass.
        repeats: Timed passes (the best counts).
        runner: What runs the timed passes, e.g. an ONNX backend of the same weights
            (:func:`cropssl.backends.load_backend`); default the eager encoder.

    """
    from cropssl.profiling import encoder_macs_per_sample

    return {
        "macs_per_pixel": float(encoder_macs_per_sample(encoder, timesteps)),
        "px_per_s": float(measure_throughput(runner or encoder, timesteps, batch_size, repeats)),
        "backend": str(getattr(runner, "backend", "torch")),
        "timesteps": int(timesteps),
        "batch_size": int(batch_size),
        "repeats": int(repeats),
        "torch_threads": int(torch.get_num_threads()),
        "parameters": int(sum(p.numel() for p in encoder.parameters())),
    }


__all__ = [
    "KINDS",
    "PRESTO_ENV",
    "EncoderDataError",
    "EncoderSpec",
    "LoadedEncoder",
    "check_compatible",
    "embed_samples",
    "encoder_cost",
    "load_checkpoint_encoder",
    "measure_throughput",
    "needed_bands",
    "presto_path",
    "resolve_encoder",
    "spec_kind",
    "weights_fingerprint",
]


def map_core_hours(pixels: float, px_per_s: float, threads: int = 1) -> float:
    """CPU core-hours to embed ``pixels`` at ``px_per_s`` measured with ``threads`` threads."""
    return pixels / px_per_s * threads / 3600
