"""Shared fixtures: tiny in-memory samples, real WorldCereal shards (skipped when ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cropssl.schema import BAND_INDEX, NUM_BANDS, PixelSamples

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WORLDCEREAL = SHARED / "data" / "worldcereal"
PRESTO = SHARED / "presto"
REAL_FILES = {
    "long": WORLDCEREAL / "2022_FRA_LPIS_month.geoparquet",
    "wide": WORLDCEREAL / "2017_east_africa_public_month_wide.parquet",
    "cube": WORLDCEREAL / "2021_BEL_31UFS_month_cube_100x100.nc",
}


def require_shared(*paths: Path) -> None:
    """Skip the test when the shared real data is not beside the repository."""
    for p in paths:
        if not p.exists():
            pytest.skip(f"{p} not available")


def make_samples(n: int = 64, T: int = 12, seed: int = 0, labelled: bool = True) -> PixelSamples:
    """Random but physically plausible samples (independent of the synthetic generator)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, T, NUM_BANDS), np.float32)
    x[..., 0] = rng.uniform(-20, -5, (n, T))
    x[..., 1] = rng.uniform(-28, -12, (n, T))
    x[..., 2:12] = rng.uniform(100, 4000, (n, T, 10))
    x[..., 12] = rng.uniform(270, 305, (n, T))
    x[..., 13] = rng.uniform(0, 0.2, (n, T))
    x[..., 14] = rng.uniform(0, 2000, (n, 1))
    x[..., 15] = rng.uniform(0, 30, (n, 1))
    b8, b4 = x[..., BAND_INDEX["B8"]], x[..., BAND_INDEX["B4"]]
    x[..., 16] = (b8 - b4) / (b8 + b4)
    mask = np.zeros_like(x, dtype=bool)
    cloudy = rng.random((n, T)) < 0.3
    mask[..., 2:12] |= cloudy[..., None]
    mask[..., 16] |= cloudy
    x[mask] = 0
    start = rng.integers(0, 12, n)
    month = ((start[:, None] + np.arange(T)[None]) % 12).astype(np.int8)
    label = rng.choice([1101010001, 1103000000, 1201000010], n) if labelled else np.full(n, -1)
    return PixelSamples(
        x=x,
        mask=mask,
        month=month,
        latlon=np.stack([rng.uniform(40, 50, n), rng.uniform(0, 10, n)], 1).astype(np.float32),
        label=label.astype(np.int64),
        year=np.full(n, 2021, np.int16),
        meta={"sample_id": np.array([f"s{seed}_{i:05d}" for i in range(n)], dtype=object)},
    )


@pytest.fixture
def samples() -> PixelSamples:
    return make_samples()


@pytest.fixture(scope="session")
def real_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of the three real WorldCereal files (T=12), built once per test session."""
    require_shared(*REAL_FILES.values())
    from cropssl.data.build import shard_files

    out = tmp_path_factory.mktemp("real") / "shards"
    shard_files(list(REAL_FILES.values()), out, timesteps=12, records_per_shard=8)
    return out


@pytest.fixture(scope="session")
def labelled_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of the two labelled WorldCereal files."""
    require_shared(REAL_FILES["long"], REAL_FILES["wide"])
    from cropssl.data.build import shard_files

    out = tmp_path_factory.mktemp("labelled") / "shards"
    shard_files([REAL_FILES["long"], REAL_FILES["wide"]], out, timesteps=12, labelled_only=True)
    return out
