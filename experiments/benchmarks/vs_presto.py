"""cropssl against the official Presto code, measured in one run with interleaved rounds.

``train``: one masked-modelling training step (forward, backward, AdamW step) of the official Presto model
(``../shared/presto/single_file_presto.py``, ``Presto.construct()``: encoder d=128 depth 2 MLP 4, decoder
128 / 2 / 8) next to cropssl's MAE with Presto's exact encoder and decoder sizes, cropssl's default MAE
config, and every other method's step; same batch, T, threads, mask ratio.

Every round times each contender once (``--steps`` steps) in turn; the ratio is the median over rounds of
``official time / contender time`` (> 1: cropssl is faster). When the official file is absent the official
side is skipped with a message and the cropssl figures are printed alone.

Run: ``python experiments/benchmarks/vs_presto.py [--batch-size 128] [--rounds 7] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cropssl.profiling import dense_batch

PRESTO_DIR = Path(__file__).resolve().parents[3] / "shared" / "presto"
METHODS = ("simclr", "mocov3", "byol", "dino", "barlow", "vicreg")


def official_presto() -> object | None:
    """The official Presto module, or None (with a message) when the file is not beside the repository."""
    if not (PRESTO_DIR / "single_file_presto.py").exists():
        print(f"note: {PRESTO_DIR / 'single_file_presto.py'} not found: the official side is skipped")
        return None
    sys.path.insert(0, str(PRESTO_DIR))
    import single_file_presto  # type: ignore[import-not-found]

    return single_file_presto


def presto_mim_mask(batch_size: int, T: int, ratio: float, seed: int) -> torch.Tensor:
    """Presto's value mask ``[B, T, 17]``: ``round(ratio * T * 8)`` dynamic (timestep, group) tokens hidden
    per sample (the same count in every sample, as Presto's ``mask_tokens`` requires)."""
    from cropssl.schema import BAND_GROUPS, DYNAMIC_GROUPS

    g = torch.Generator().manual_seed(seed)
    G = len(DYNAMIC_GROUPS)
    k = round(ratio * T * G)
    hide = torch.zeros(batch_size, T * G, dtype=torch.bool)
    idx = torch.rand(batch_size, T * G, generator=g).argsort(dim=1)[:, :k]
    hide.scatter_(1, idx, True)
    hide = hide.reshape(batch_size, T, G)
    mask = torch.zeros(batch_size, T, 17)
    for j, name in enumerate(DYNAMIC_GROUPS):
        mask[..., list(BAND_GROUPS[name])] = hide[..., j : j + 1].float()
    return mask


def official_train_step(presto_mod: object, batch_size: int, T: int) -> Callable[[], None]:
    """The official model's training step: forward with the MIM mask, MSE on the hidden values, AdamW."""
    torch.manual_seed(0)
    model = presto_mod.Presto.construct().train()  # type: ignore[attr-defined]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b = dense_batch(batch_size, T)
    mask = presto_mim_mask(batch_size, T, 0.75, seed=0)
    dw = torch.full((batch_size, T), 9, dtype=torch.long)  # no Dynamic World (as in cropssl's batch)

    def step() -> None:
        opt.zero_grad()
        eo, _ = model(b.x, dynamic_world=dw, latlons=b.latlon, mask=mask, month=b.month)
        sel = mask.bool()
        loss = torch.nn.functional.mse_loss(eo[sel], b.x[sel])
        loss.backward()
        opt.step()

    return step


def cropssl_train_step(method: str, batch_size: int, T: int, *overrides: str) -> Callable[[], None]:
    """One training step of a cropssl method built from its real config (default Presto-sized encoder)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from cropssl.config import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("pretrain", overrides=[f"method={method}", *overrides])
    torch.manual_seed(0)
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    method_cfg.pop("name")
    model = instantiate(method_cfg, encoder=instantiate(cfg.encoder), _convert_="all").train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = dense_batch(batch_size, T)

    def step() -> None:
        opt.zero_grad()
        loss, _ = model.shared_step(batch)
        loss.backward()
        opt.step()

    return step


def interleaved(contenders: dict[str, Callable[[], None]], rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of every contender in each round (contenders run one after another per round)."""
    for fn in contenders.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            # idle worker threads of the previous contender (OpenMP, ONNX Runtime) busy-wait a while after
            # their last task: let them go to sleep so they do not take the cores from this one
            time.sleep(0.3)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - t0) / steps)
    return times


PRESTO_SIZES = ("method.decoder_dim=128", "method.decoder_depth=2", "method.decoder_heads=8")


def bench_train(batch_size: int, T: int, rounds: int, steps: int, methods: bool = True) -> dict[str, str]:
    """Samples/s of each training step and its ratio to the official Presto step."""
    presto_mod = official_presto()
    contenders: dict[str, Callable[[], None]] = {}
    if presto_mod is not None:
        contenders["official Presto MAE step"] = official_train_step(presto_mod, batch_size, T)
    contenders["cropssl mae (Presto's encoder + decoder sizes)"] = cropssl_train_step(
        "mae", batch_size, T, *PRESTO_SIZES
    )
    contenders["cropssl mae (default config)"] = cropssl_train_step("mae", batch_size, T)
    if methods:
        for m in METHODS:
            contenders[f"cropssl {m}"] = cropssl_train_step(m, batch_size, T)
    times = interleaved(contenders, rounds, steps)
    ref = times.get("official Presto MAE step")
    out = {}
    for name, ts in times.items():
        rate = batch_size / statistics.median(ts)
        line = f"{rate:,.0f} samples/s"
        if ref is not None and name != "official Presto MAE step":
            ratios = sorted(r / t for r, t in zip(ref, ts, strict=True))
            line += f" = {statistics.median(ratios):.2f}x official (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
        out[f"train step: {name}"] = line
    return out


# ---------------------------------------------------------------------------------------------- inference
def official_encoder(presto_mod: object) -> torch.nn.Module:
    """The official encoder with the published weights (eval mode)."""
    model = presto_mod.Presto.construct()  # type: ignore[attr-defined]
    model.load_state_dict(torch.load(PRESTO_DIR / "default_model.pt", map_location="cpu", weights_only=True))
    return model.encoder.eval()


def official_embed(encoder: torch.nn.Module, b: object, chunk: int | None = None) -> torch.Tensor:
    """The official encoder's embeddings of a cropssl ``Batch``, ``chunk`` pixels per call (None: one)."""

    def one(p: object) -> torch.Tensor:
        return encoder(p.x, p.dynamic_world, p.latlon, mask=p.mask.float(), month=p.month, eval_task=True)

    if chunk is None:
        return one(b)
    return torch.cat([one(b.select(slice(i, i + chunk))) for i in range(0, len(b), chunk)])


def reference_batch(n: int) -> tuple[object, torch.Tensor]:
    """``n`` pixels cycled from Presto's 48 real reference pixels (their real missing-value masks)."""
    import numpy as np

    from cropssl.schema import Batch

    ref = np.load(PRESTO_DIR / "reference_embeddings.npz")
    idx = np.arange(n) % len(ref["embedding"])
    mask = torch.from_numpy(ref["mask"][idx] > 0)
    batch = Batch(
        x=torch.from_numpy(ref["x_normalized"][idx]).float().masked_fill(mask, 0.0),
        mask=mask,
        month=(torch.from_numpy(ref["start_month"][idx]).long()[:, None] + torch.arange(12)) % 12,
        latlon=torch.from_numpy(ref["latlon"][idx]).float(),
        dynamic_world=torch.from_numpy(ref["dynamic_world"][idx]).long(),
        label=torch.full((n,), -1),
    )
    return batch, torch.from_numpy(ref["embedding"][idx])


def bench_inference(batch_size: int, rounds: int, export_dir: Path | None) -> dict[str, str]:
    """Embedding px/s of the official encoder and every cropssl backend, dense and with real masks."""
    from cropssl.backend_int8 import int8_unavailable
    from cropssl.backends import bf16_unavailable, cosine_agreement
    from cropssl.export import export_encoder, load_encoder

    presto_mod = official_presto()
    if export_dir is None or not (export_dir / "config.json").exists():
        export_dir = Path("/tmp/cropssl_bench_presto_export")
        export_encoder("presto", export_dir, formats=["safetensors", "onnx", "onnx-int8"], overwrite=True)
    why_not_bf16 = bf16_unavailable()
    if why_not_bf16 is not None:
        print(f"note: backend torch-bf16 skipped: {why_not_bf16}")
    bf16 = ("torch-bf16",) if why_not_bf16 is None else ()
    backends = {b: load_encoder(export_dir, backend=b) for b in ("torch", *bf16, "onnx", "onnx-int8")}
    dense = dense_batch(batch_size, 12)
    real, real_ref = reference_batch(batch_size)
    rows: dict[str, str] = {}
    for label, batch in (("dense", dense), ("real masks", real)):
        contenders: dict[str, Callable[[], object]] = {}
        if presto_mod is not None:
            official = official_encoder(presto_mod)
            if label == "dense":
                contenders["official Presto encoder"] = lambda b=batch, e=official: official_embed(e, b)
                # the official code fed the cache-sized chunks cropssl uses (a fair bound)
                contenders["official Presto encoder, 32-px chunks"] = lambda b=batch, e=official: (
                    official_embed(e, b, chunk=32)
                )
            else:  # varying missing tokens: the official mask_tokens needs one sample at a time
                contenders["official Presto encoder"] = lambda b=batch, e=official: official_embed(e, b, 1)
        for name, enc in backends.items():
            contenders[f"cropssl {name}"] = lambda b=batch, e=enc: e(b)
        if int8_unavailable() is None:  # calibrated on the first pixels it embeds: one per kind of input
            int8 = load_encoder(export_dir, backend="torch-int8")
            contenders["cropssl torch-int8"] = lambda b=batch, e=int8: e(b)
        else:
            print(f"note: backend torch-int8 skipped: {int8_unavailable()}")
        outs = {}
        with torch.inference_mode():
            for name, fn in contenders.items():
                outs[name] = torch.as_tensor(fn()).float()
            times = interleaved(contenders, rounds, 1)
        ref = outs.get("official Presto encoder", backends["torch"](batch))
        base = times.get("official Presto encoder")
        for name, ts in times.items():
            rate = batch_size / statistics.median(ts)
            line = f"{rate:,.0f} px/s"
            if base is not None and name != "official Presto encoder":
                ratios = sorted(r / t for r, t in zip(base, ts, strict=True))
                line += f" = {statistics.median(ratios):.2f}x official"
            if not name.startswith("official Presto encoder"):
                line += f", min cosine to official {cosine_agreement(outs[name].numpy(), ref.numpy()):.5f}"
            rows[f"embed ({label}): {name}"] = line
        if "cropssl torch-int8" in contenders:
            rows[f"embed ({label}): cropssl torch-int8"] += f", {int8.fallbacks} calls fell back to fp32"
        if label == "real masks":
            cos = cosine_agreement(outs["cropssl torch"].numpy(), real_ref.numpy())
            rows["embed (real masks): cropssl torch vs reference_embeddings.npz"] = f"min cosine {cos:.6f}"
    return rows


def main() -> None:
    """Print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--timesteps", type=int, default=12)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="steps per contender and round")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-methods", action="store_true", help="MAE only (skip the other methods' steps)")
    p.add_argument("--part", choices=["train", "inference", "all"], default="all")
    p.add_argument("--embed-batch-size", type=int, default=256)
    p.add_argument("--export-dir", default=None, help="an export of Presto (default: exported here, in /tmp)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"batch {args.batch_size}, T={args.timesteps}, {args.threads} threads, {args.rounds} interleaved "
        f"rounds of {args.steps} steps, mask ratio 0.75, dense inputs, no Dynamic World"
    )
    rows: dict[str, str] = {}
    if args.part in ("train", "all"):
        rows.update(
            bench_train(args.batch_size, args.timesteps, args.rounds, args.steps, not args.no_methods)
        )
    if args.part in ("inference", "all"):
        export = Path(args.export_dir) if args.export_dir else None
        rows.update(bench_inference(args.embed_batch_size, args.rounds, export))
    width = max(len(k) for k in rows)
    for k, v in rows.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
