import json
import tarfile

import numpy as np
import pytest

from cropssl.data.shard_writer import write_shards
from cropssl.data.shards import (
    MANIFEST,
    ShardError,
    iter_shard,
    load_manifest,
    read_shards,
    resolve_shards,
)
from cropssl.schema import BANDS
from tests.conftest import make_samples


def _assert_same(a, b):
    for f in ("x", "mask", "month", "latlon", "label", "year"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert list(a.meta["sample_id"]) == list(b.meta["sample_id"])


def test_round_trip_and_manifest(tmp_path):
    s = make_samples(300, T=12)
    m = write_shards(s, tmp_path / "sh", samples_per_record=32, records_per_shard=4, sources=["unit"])
    back = read_shards(tmp_path / "sh")
    _assert_same(s, back)
    assert m == load_manifest(tmp_path / "sh")
    # 300 samples, 128 per shard -> 3 shards of 128, 128, 44 samples, records of 32
    assert [e["num_samples"] for e in m["shards"]] == [128, 128, 44]
    assert [e["num_records"] for e in m["shards"]] == [4, 4, 2]
    assert m["num_samples"] == 300 and m["timesteps"] == 12 and m["bands"] == list(BANDS)
    labels, counts = np.unique(s.label, return_counts=True)
    assert m["label_counts"] == {str(k): int(c) for k, c in zip(labels, counts)}
    vv = s.x[..., 0][~s.mask[..., 0]]
    assert m["band_stats"]["VV"]["mean"] == pytest.approx(float(vv.mean()), rel=1e-6)
    b2_missing = s.mask[..., 2].mean()
    assert m["band_stats"]["B2"]["missing_fraction"] == pytest.approx(float(b2_missing))
    assert m["sources"] == ["unit"] and m["schema_version"] == 1


def test_records_pack_many_pixels(tmp_path):
    s = make_samples(256)
    write_shards(s, tmp_path / "sh", samples_per_record=128)
    with tarfile.open(tmp_path / "sh" / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert len({n.split(".")[0] for n in names}) == 2  # two records for 256 pixels
    size = (tmp_path / "sh" / "shard-000000.tar").stat().st_size
    payload = s.x.nbytes + s.mask.nbytes
    assert size < 1.1 * payload + 20_000  # per-record overhead does not dominate


def test_writing_is_deterministic(tmp_path):
    s = make_samples(100)
    write_shards(s, tmp_path / "a", samples_per_record=16)
    write_shards(s, tmp_path / "b", samples_per_record=16)
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_refuses_to_overwrite_and_leaves_nothing_half_written(tmp_path):
    s = make_samples(10)
    write_shards(s, tmp_path / "sh")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_shards(s, tmp_path / "sh")
    write_shards(make_samples(5, seed=3), tmp_path / "sh", overwrite=True)
    assert load_manifest(tmp_path / "sh")["num_samples"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["sh"]  # no temp dirs left behind


def test_truncated_shard_error_names_the_shard(tmp_path):
    write_shards(make_samples(200), tmp_path / "sh", samples_per_record=16, records_per_shard=4)
    shard = tmp_path / "sh" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    with pytest.raises(ShardError, match="shard-000001.tar"):
        list(iter_shard(str(shard)))
    # without a manifest to compare sizes, the tar reader itself must notice and name the shard
    (tmp_path / "sh" / MANIFEST).unlink()
    with pytest.raises(ShardError, match="shard-000001.tar"):
        list(iter_shard(str(shard)))


def test_corrupt_record_names_the_shard(tmp_path):
    write_shards(make_samples(20), tmp_path / "sh")
    src = tmp_path / "sh" / "shard-000000.tar"
    bad = tmp_path / "bad.tar"
    with tarfile.open(src) as tin, tarfile.open(bad, "w") as tout:
        for m in tin.getmembers():
            if not m.name.endswith("mask.npy"):
                tout.addfile(m, tin.extractfile(m))
    with pytest.raises(ShardError, match="bad.tar.*mask.npy"):
        list(iter_shard(str(bad)))


def test_resolve_shards_specs_and_errors(tmp_path):
    write_shards(make_samples(300), tmp_path / "sh", samples_per_record=50, records_per_shard=2)
    from_dir = resolve_shards(tmp_path / "sh")
    assert len(from_dir) == 3
    assert resolve_shards(str(tmp_path / "sh" / "shard-*.tar")) == from_dir
    assert resolve_shards(str(tmp_path / "sh" / "shard-{000000..000002}.tar")) == from_dir
    with pytest.raises(FileNotFoundError, match="no shards match"):
        resolve_shards(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        resolve_shards(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_shards(str(tmp_path / "sh" / "shard-000009.tar"))


def test_manifest_rejects_other_schema(tmp_path):
    write_shards(make_samples(3), tmp_path / "sh")
    m = json.loads((tmp_path / "sh" / MANIFEST).read_text())
    m["schema_version"] = 99
    (tmp_path / "sh" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match="re-shard"):
        load_manifest(tmp_path / "sh")


def test_shard_layout_gives_every_reader_eight_shards():
    from cropssl.data.shard_writer import shard_layout

    for n, readers in [(11_000, 4), (1_000_000, 8), (500, 4), (3, 2)]:
        spr, rps = shard_layout(n, 256, 16, readers)
        shards = -(-n // (spr * rps))
        assert shards >= min(8 * readers, n) and spr <= 256 and rps <= 16
    assert shard_layout(10_000_000, 256, 16, 4) == (256, 16)  # big corpora: full-size shards
