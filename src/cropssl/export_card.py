"""The model card (``README.md``) of an export directory, written from its ``config.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cropssl.artifacts import (
    CONFIG_FILE,
    CONTINUE_FILE,
    FORMAT_FILES,
    ONNX_FILE,
    README_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
)
from cropssl.export_onnx import OUTPUT_NAME, VERIFY_ATOL


def model_card(config: Mapping[str, Any]) -> str:
    """The Markdown model card: what the encoder is, where it came from, its inputs, output and files."""
    sections = (_card_intro, _card_files, _card_usage, _card_inputs, _card_lineage, _card_metrics)
    return "\n".join(line for section in sections for line in section(config))


def _card_intro(config: Mapping[str, Any]) -> list[str]:
    """Title and what the encoder is for."""
    lines = [
        f"# cropssl pixel time series encoder ({config['ssl_method']}, d={config['embed_dim']})",
        "",
        "A Presto-compatible transformer that embeds one pixel's satellite time series (Sentinel-1, "
        "Sentinel-2, ERA5, SRTM, NDVI, Dynamic World, lat/lon) into a "
        f"{config['embed_dim']}-dimensional vector, pre-trained with the self-supervised method "
        f"`{config['ssl_method']}` by cropssl {config['cropssl_version']}. Intended for crop type mapping: "
        "train a light classifier (linear probe, k-NN, CatBoost) on the embeddings.",
        "",
    ]
    return lines


def _card_files(config: Mapping[str, Any]) -> list[str]:
    """The files of the export directory."""
    lines = ["## Files", "", "| file | content |", "|---|---|"]
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
    return lines


def _card_usage(config: Mapping[str, Any]) -> list[str]:
    """How to load it (cropssl, TorchScript, ONNX Runtime, the command line)."""
    lines = [
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
    ]
    return lines


def _card_inputs(config: Mapping[str, Any]) -> list[str]:
    """The input tensors, bands, normalisation, groups, output and architecture."""
    enc = config["encoder_config"]
    inputs = config["inputs"]
    lines = [
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
    ]
    return lines


def _card_lineage(config: Mapping[str, Any]) -> list[str]:
    """Where the weights came from."""
    lines = ["## Lineage", ""]
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
    return lines


def _card_metrics(config: Mapping[str, Any]) -> list[str]:
    """Metrics at export and the verification of the other formats."""
    lines = ["", "## Metrics at export", ""]
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
    return lines
