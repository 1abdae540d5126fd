"""Checkpoints: atomic saves, lineage, and initialising a new run from existing weights.

Start modes (one config key, ``start.mode``):

========================  =====================================================================
``fresh``                 new run, random initialisation
``resume``                the same run continues from its ``checkpoints/last.ckpt``: weights,
                          optimiser, schedule position, teacher and buffers, loop counters, same
                          run dir and wandb run id; fails loudly if ``last.ckpt`` is missing
``from_weights``          new run initialised from a cropssl checkpoint, an exported encoder dir
                          or the published Presto weights; new optimiser, re-warmed schedule
========================  =====================================================================
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import nn

from cropssl.artifacts import CONFIG_FILE, CONTINUE_FILE, WEIGHTS_FILE, presto_path, sha256_file

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file in the same directory, fsync, then rename.

    A kill during a save leaves the previous checkpoint untouched (rename is atomic on POSIX), and the
    checkpoint a save replaces is kept as ``<name>-1.ckpt`` (``last-1.ckpt``), so a checkpoint damaged
    after it was written (a copy cut short, a disk error) still leaves one to resume from.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Save ``checkpoint`` to ``path`` atomically, keeping the one it replaces as ``<stem>-1``."""
        from cropssl.io.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            if path.exists():
                previous = previous_checkpoint(path)
                with contextlib.suppress(OSError):
                    previous.unlink(missing_ok=True)
                    os.link(path, previous)  # the old checkpoint stays whole until the rename


def previous_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint a save replaces is kept: ``last.ckpt`` -> ``last-1.ckpt``."""
    p = Path(path)
    return p.with_name(f"{p.stem}-1{p.suffix}")


class CheckpointError(ValueError):
    """A checkpoint file is truncated or corrupt; the message names it and what to resume from instead."""


def check_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """Cheap integrity check of a torch checkpoint (its zip directory, without loading the tensors).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointError: it is truncated or not a torch checkpoint, naming the intact previous checkpoint
            (``last-1.ckpt``) when there is one.

    """
    import zipfile

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        with zipfile.ZipFile(p) as z:
            z.getinfo(next(n for n in z.namelist() if n.endswith("data.pkl")))
    except (zipfile.BadZipFile, StopIteration, KeyError, OSError) as exc:
        prev = previous_checkpoint(p)
        hint = "re-create it, or start a new run (start=fresh)"
        if prev.exists() and prev != p:
            try:
                with zipfile.ZipFile(prev):
                    pass
                hint = f"the previous checkpoint {prev} is intact: resume from it with start.checkpoint={prev.name}"  # noqa: E501
            except zipfile.BadZipFile:
                pass
        raise CheckpointError(
            f"checkpoint {p} is truncated or corrupt ({type(exc).__name__}: {exc}); {hint}"
        ) from exc


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a cropssl/Lightning checkpoint safely (``weights_only=True``), naming a missing or broken file."""
    check_checkpoint_file(path)
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc}); it may be corrupt") from exc


def read_encoder_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A checkpoint of ``cropssl-pretrain`` and its encoder weights (``encoder.`` prefix removed).

    The one reader of checkpoints as encoders (export, evaluation, predict): read once, safely
    (``weights_only``), with the ``cropssl`` metadata that names the architecture.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a directory, a truncated file, no ``state_dict``, no cropssl metadata or no
            encoder weights; the message says which and what to give instead.

    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory; give a cropssl checkpoint file (.ckpt)")
    ckpt = load_checkpoint(p)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{p} is not a Lightning/cropssl checkpoint (no 'state_dict')")
    meta = ckpt.get("cropssl")
    if not isinstance(meta, dict) or not isinstance(meta.get("encoder_config"), dict):
        raise CheckpointError(
            f"{p} has no cropssl metadata (checkpoint['cropssl']['encoder_config']): it was not written by "
            "cropssl-pretrain, so the encoder architecture is unknown. Give checkpoints of cropssl-pretrain "
            "runs (runs/<run>/checkpoints/last.ckpt); for Presto's weights use 'presto'"
        )
    state = {k[len("encoder.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
    if not state:
        raise CheckpointError(f"{p} holds no encoder weights (no state_dict keys starting with 'encoder.')")
    return ckpt, state


def source_kind(source: str) -> str:
    """Classify a ``from_weights`` source: ``presto``, ``export`` (a directory) or ``checkpoint``."""
    if source == "presto" or source.endswith("default_model.pt"):
        return "presto"
    p = Path(source)
    if p.is_dir():
        return "export"
    if p.suffix in (".ckpt", ".pt", ".pth"):
        return "checkpoint"
    raise ValueError(
        f"cannot tell what {source!r} is: give a cropssl checkpoint (.ckpt), an exported encoder directory "
        "(with model.safetensors + config.json), or 'presto' / the path of Presto's default_model.pt"
    )


def _match_state(
    module: nn.Module, source: dict[str, torch.Tensor], strict: bool, what: str
) -> dict[str, list[str]]:
    """Load the entries of ``source`` whose names and shapes match; report (strict: refuse) the rest."""
    own = module.state_dict()
    loaded = [k for k in source if k in own and own[k].shape == source[k].shape]
    mismatched = [
        f"{k}: {tuple(source[k].shape)} vs {tuple(own[k].shape)}"
        for k in source
        if k in own and own[k].shape != source[k].shape
    ]
    missing = [k for k in own if k not in source]
    unexpected = [k for k in source if k not in own]
    # the lat/lon token is a choice (configs/location/), not another architecture: a source with it loads
    # into an encoder without it (its token weights ignored) and the other way (the token starts fresh)
    differs = [k for k in missing + unexpected if "latlon_embed." not in k]
    if strict and (mismatched or differs):
        raise ValueError(
            f"{what} does not match this architecture (strict mode). Shape mismatches: {mismatched[:10]}; "
            f"missing in the source: {missing[:10]}; not in this model: {unexpected[:10]}. "
            "Use start.strict=false to load only what matches."
        )
    module.load_state_dict({k: source[k] for k in loaded}, strict=False)
    return {"loaded": loaded, "initialised": missing, "ignored": unexpected + mismatched}


def remap_groups(
    state: dict[str, torch.Tensor], own: nn.Module, src_groups: list[str] | None, prefix: str = ""
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map the channel-embedding rows of a source encoder onto this encoder's channel groups by name.

    Rows of groups both encoders have are copied; rows of groups only this encoder has keep their
    initialisation (returned as ``new_groups``). The last row (Dynamic World) always maps to the last.
    """
    own_groups = list(getattr(own, "groups", []))
    key = f"{prefix}channel_embed.weight"
    if not src_groups or key not in state or list(src_groups) == own_groups:
        return state, []
    own_table = own.state_dict().get("channel_embed.weight")
    if own_table is None or own_table.shape[1] != state[key].shape[1]:
        return state, []
    table = own_table.clone()
    for i, g in enumerate(own_groups):
        if g in src_groups:
            table[i] = state[key][list(src_groups).index(g)]
    table[-1] = state[key][-1]
    new_groups = [g for g in own_groups if g not in src_groups]
    return {**state, key: table}, new_groups


def _load_method_state(
    method: nn.Module,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    strict: bool,
    reset_teacher: bool,
) -> dict[str, Any]:
    """Load a full method state (checkpoint or continue bundle): encoder, heads and teacher.

    Args:
        method: The method to load into.
        state: Its ``state_dict`` as saved (``encoder.*``, heads, ``teacher.*``).
        meta: The source's metadata with ``encoder_config`` (for channel-group remapping).
        strict: Refuse mismatches instead of loading what matches.
        reset_teacher: Drop the saved teacher (it is re-initialised from the loaded student).

    """
    encoder: nn.Module = method.encoder  # type: ignore[assignment]
    src_groups = (meta.get("encoder_config") or {}).get("groups")
    state, new_groups = remap_groups(state, encoder, src_groups, prefix="encoder.")
    strict = strict and not new_groups
    src_method = meta.get("method")
    if src_method and src_method != getattr(method, "method_name", src_method):
        # another method's heads mean nothing here: take the encoder, initialise the rest
        enc = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        report = _match_state(encoder, enc, strict, f"the {src_method} checkpoint's encoder")
        report = {k: [f"encoder.{n}" for n in v] for k, v in report.items()}
        report.update(new_groups=new_groups, teacher_loaded=False)
        return report
    if reset_teacher:
        state = {k: v for k, v in state.items() if not k.startswith("teacher")}
    own_keys = set(method.state_dict())
    if reset_teacher or not strict:
        state = {k: v for k, v in state.items() if k in own_keys or k.startswith("encoder.")}
    report = _match_state(method, state, strict and not reset_teacher, "the checkpoint's method state")
    report["new_groups"] = new_groups
    report["teacher_loaded"] = any(k.startswith("teacher.") for k in report["loaded"])
    return report


def init_from_weights(
    method: nn.Module, source: str, *, strict: bool = True, reset_teacher: bool = False
) -> dict[str, Any]:
    """Initialise a method's weights from a checkpoint, an export dir or Presto's weights.

    Channel-group aware: parameters of groups the source lacks keep their initialisation and are
    reported (``initialised``); in strict mode any mismatch is an error naming the keys.

    Args:
        method: The (new) SSL method whose ``encoder`` (and, for checkpoints, heads/teacher) to load.
        source: Path of a ``.ckpt``, an export directory, or ``presto`` / Presto's ``default_model.pt``.
        strict: Refuse mismatching architectures instead of loading what matches.
        reset_teacher: For teacher methods, re-initialise the teacher from the loaded student instead of
            loading the checkpoint's teacher.

    Returns:
        A report with the source, its sha256, and the loaded / initialised / ignored keys.

    """
    kind = source_kind(source)
    encoder: nn.Module = method.encoder  # type: ignore[assignment]
    report: dict[str, Any] = {"source": source, "kind": kind}
    if kind == "presto":
        from cropssl.presto_weights import read_presto

        path = presto_path(None if source == "presto" else source)
        res = encoder.load_presto_state_dict(read_presto(path))  # type: ignore[operator]
        if strict and res.get("missing"):
            raise ValueError(f"Presto weights lack {res['missing']} (strict mode); use start.strict=false")
        report.update(path=str(path), sha256=sha256_file(path), **res)
    elif kind == "export":
        from safetensors.torch import load_file

        files = [Path(source) / WEIGHTS_FILE, Path(source) / CONFIG_FILE]
        for f in files:
            if not f.exists():
                raise FileNotFoundError(f"export dir {source} lacks {f.name}")
        parent_config = json.loads(files[1].read_text())
        report["parent_config"] = parent_config
        bundle = Path(source) / CONTINUE_FILE
        same_method = (parent_config.get("continue") or {}).get("method") == getattr(
            method, "method_name", ""
        )
        if bundle.exists() and same_method:  # the continue bundle: student + heads + teacher
            report.update(path=str(bundle), sha256=sha256_file(bundle), continue_bundle=True)
            report.update(
                _load_method_state(method, load_file(str(bundle)), parent_config, strict, reset_teacher)
            )
            report["parent_lineage"] = parent_config.get("lineage")
        else:
            state = load_file(str(files[0]))
            src_groups = (parent_config.get("encoder") or parent_config.get("encoder_config") or {}).get(
                "groups"
            )
            state, new_groups = remap_groups(state, encoder, src_groups)
            report.update(path=str(files[0]), sha256=sha256_file(files[0]), new_groups=new_groups)
            report.update(
                _match_state(encoder, state, strict and not new_groups, f"exported encoder {source}")
            )
    else:
        ckpt = load_checkpoint(source)
        report.update(
            path=str(source),
            sha256=sha256_file(source),
            parent_lineage=ckpt.get("cropssl", {}).get("lineage"),
        )
        report.update(
            _load_method_state(method, ckpt["state_dict"], ckpt.get("cropssl", {}), strict, reset_teacher)
        )
    if hasattr(method, "reset_teacher") and (reset_teacher or not report.get("teacher_loaded")):
        method.reset_teacher()  # teacher starts as a copy of the loaded student
    log.info(
        "from_weights %s (%s): %d tensors loaded, %d initialised, %d ignored",
        source,
        kind,
        len(report.get("loaded", [])),
        len(report.get("initialised", report.get("missing", []))),
        len(report.get("ignored", report.get("unexpected", []))),
    )
    return report
