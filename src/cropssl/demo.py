"""The demo's two steps besides pre-training: shards of the bundled data, and the gain probe.

``cropssl-demo`` (:mod:`cropssl.cli.demo`) shards the real WorldCereal files when they are present, else
synthetic pixels; after pre-training it runs the same online probe on the pre-trained encoder, a
random-init encoder of its architecture and the published Presto weights.
"""

from __future__ import annotations

from pathlib import Path

REAL_FILES = (
    "2022_FRA_LPIS_month.geoparquet",
    "2017_east_africa_public_month_wide.parquet",
    "2021_BEL_31UFS_month_cube_100x100.nc",
)
LABELLED_FILES = REAL_FILES[:2]


def prepare_shards(data: Path, work: Path, pixels: int, seed: int = 0) -> tuple[str, Path, Path]:
    """Create (or reuse) the pre-training and labelled shard directories.

    Returns:
        ``(kind, pretrain_dir, labelled_dir)`` where kind is ``"real"`` or ``"synthetic"``.

    """
    real = all((data / f).exists() for f in REAL_FILES)
    kind = "real" if real else "synthetic"
    pretrain, labelled = work / "shards" / f"{kind}_pretrain", work / "shards" / f"{kind}_labelled"
    if real:
        from cropssl.data.build import shard_files

        if not (pretrain / "manifest.json").exists():
            print(f"sharding {len(REAL_FILES)} real files -> {pretrain}")
            shard_files([data / f for f in REAL_FILES], pretrain, overwrite=True)
        if not (labelled / "manifest.json").exists():
            shard_files([data / f for f in LABELLED_FILES], labelled, labelled_only=True, overwrite=True)
    else:
        from cropssl.data.synth import synth_to_shards

        if not (pretrain / "manifest.json").exists():
            print(f"generating {pixels} synthetic pixels -> {pretrain}")
            synth_to_shards(pretrain, pixels, seed=seed, overwrite=True)
        if not (labelled / "manifest.json").exists():
            synth_to_shards(labelled, max(2000, pixels // 10), seed=seed + 1, overwrite=True)
    return kind, pretrain, labelled


def compare_probes(checkpoint: Path, labelled: Path) -> dict[str, dict[str, float]]:
    """The online probe on the pre-trained encoder, a random-init encoder of its architecture and Presto."""
    import torch

    from cropssl.callbacks.monitors import ProbeMonitor
    from cropssl.encoder import PixelTimeSeriesEncoder
    from cropssl.evaluation.encoders import load_checkpoint_encoder, presto_path

    probe = ProbeMonitor(labelled_shards=str(labelled), k=20, max_samples=4096)
    trained, _ = load_checkpoint_encoder(checkpoint)
    torch.manual_seed(0)
    rows = {
        "this run (pre-trained)": probe.evaluate(trained),
        "random init, same encoder": probe.evaluate(PixelTimeSeriesEncoder(**trained.config)),
    }
    try:
        rows["Presto (published weights)"] = probe.evaluate(PixelTimeSeriesEncoder.from_presto(presto_path()))
    except FileNotFoundError as exc:
        print(f"  (Presto weights not found, skipped: {exc})")
    return rows
