import numpy as np
import pytest
import torch

from cropssl.data.datamodule import PixelDataModule, PixelStream, make_loader
from cropssl.data.shard_writer import write_shards
from cropssl.data.shards import ShardError
from tests.conftest import make_samples


@pytest.fixture
def shard_dir(tmp_path):
    write_shards(make_samples(1000, seed=1), tmp_path / "sh", samples_per_record=50, records_per_shard=2)
    return tmp_path / "sh"  # 10 shards of 100 samples


def _ids(loader):
    return [sid for b in loader for sid in b.meta["sample_id"]]


def test_one_pass_sees_every_sample_once_normalised(shard_dir):
    stream = PixelStream(shard_dir, batch_size=64, shuffle_buffer=200, seed=0)
    batches = list(stream)
    ids = [i for b in batches for i in b.meta["sample_id"]]
    assert sorted(ids) == sorted(f"s1_{i:05d}" for i in range(1000))
    b = batches[0]
    assert b.x.shape == (64, 12, 17) and b.x.dtype == torch.float32
    assert (b.x[b.mask] == 0).all()
    assert b.x[..., 2][~b.mask[..., 2]].max() < 1.0  # S2 reflectance / 1e4


def test_deterministic_given_seed_and_shuffled(shard_dir):
    a = _ids(PixelStream(shard_dir, batch_size=64, shuffle_buffer=300, seed=5))
    b = _ids(PixelStream(shard_dir, batch_size=64, shuffle_buffer=300, seed=5))
    c = _ids(PixelStream(shard_dir, batch_size=64, shuffle_buffer=300, seed=6))
    assert a == b and a != c
    assert a != sorted(a)  # shuffled


def test_epoch_changes_order(shard_dir):
    s = PixelStream(shard_dir, batch_size=64, shuffle_buffer=300, seed=5)
    a = _ids(s)
    s.set_epoch(1)
    assert _ids(s) != a


def test_workers_split_shards_without_duplicates(shard_dir):
    stream = PixelStream(shard_dir, batch_size=50, shuffle_buffer=0, shuffle_shards=False)
    ids = _ids(make_loader(stream, num_workers=2))
    assert len(ids) == 1000 and len(set(ids)) == 1000


def test_resampled_mode_yields_fixed_steps_with_workers(shard_dir):
    stream = PixelStream(shard_dir, batch_size=32, shuffle_buffer=100, resampled=True, steps_per_epoch=7)
    assert len(list(stream)) == 7
    assert len(list(make_loader(stream, num_workers=2))) == 7
    with pytest.raises(ValueError, match="steps_per_epoch"):
        PixelStream(shard_dir, resampled=True)


def test_nodes_get_disjoint_shards(shard_dir):
    seen = []
    for rank in range(2):
        stream = PixelStream(shard_dir, batch_size=50, shuffle_buffer=0)
        stream.set_rank(rank, 2)
        seen.append(set(_ids(stream)))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 1000


def test_corrupt_shard_fails_or_is_skipped_and_counted(shard_dir):
    bad = shard_dir / "shard-000003.tar"
    bad.write_bytes(bad.read_bytes()[:3000])
    with pytest.raises(ShardError, match="shard-000003.tar"):
        list(PixelStream(shard_dir, batch_size=50, shuffle_buffer=0))
    stream = PixelStream(shard_dir, batch_size=50, shuffle_buffer=0, skip_corrupt=True)
    ids = _ids(stream)
    # found by the size check against the manifest before anything is read
    assert len(ids) == 900 and [u for u, _ in stream.preflight_skipped] == [str(bad)]


def test_datamodule_loaders(shard_dir):
    dm = PixelDataModule(train=str(shard_dir), val=str(shard_dir), batch_size=100, steps_per_epoch=3)
    dm.setup("fit")
    assert len(list(dm.train_dataloader())) == 3
    val_ids = _ids(dm.val_dataloader())
    assert val_ids == sorted(val_ids) and len(val_ids) == 1000
    assert np.isfinite(next(iter(dm.train_dataloader())).x.numpy()).all()


def test_weighted_mix_draws_sources_by_weight(tmp_path):
    write_shards(make_samples(400, seed=1), tmp_path / "new", samples_per_record=50, records_per_shard=1)
    write_shards(make_samples(400, seed=2), tmp_path / "old", samples_per_record=50, records_per_shard=1)
    mix = [{"shards": str(tmp_path / "new"), "weight": 0.8}, {"shards": str(tmp_path / "old"), "weight": 0.2}]
    stream = PixelStream(mix, batch_size=50, shuffle_buffer=0, resampled=True, steps_per_epoch=200)
    ids = _ids(stream)
    frac_new = np.mean([i.startswith("s1_") for i in ids])
    assert abs(frac_new - 0.8) < 0.05


@pytest.mark.parametrize(("weights", "msg"), [((1.0, -0.5), "negative"), ((0.0, 0.0), "sum to 0")])
def test_bad_mix_weights(tmp_path, weights, msg):
    write_shards(make_samples(10), tmp_path / "a")
    mix = [{"shards": str(tmp_path / "a"), "weight": w} for w in weights]
    with pytest.raises(ValueError, match=msg):
        PixelStream(mix, resampled=True, steps_per_epoch=1)


def test_mix_needs_resampled(tmp_path):
    write_shards(make_samples(10), tmp_path / "a")
    mix = [{"shards": str(tmp_path / "a"), "weight": 1}, {"shards": str(tmp_path / "a"), "weight": 1}]
    with pytest.raises(ValueError, match="resampled"):
        PixelStream(mix)


def _record_boundary(shard) -> int:
    """Byte offset just after the first record of a tar shard (every file of a record is 512-aligned)."""
    import tarfile

    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    first_key = members[0].name.split(".")[0]
    last = [m for m in members if m.name.split(".")[0] == first_key][-1]
    return last.offset_data + -(-last.size // 512) * 512


def test_shards_are_checked_before_training_missing_and_truncated_at_a_record_boundary(shard_dir):
    """A shard cut exactly between records reads without a tar error; the manifest size check names it."""
    from cropssl.data.shards import iter_shard

    cut = shard_dir / "shard-000004.tar"
    data = cut.read_bytes()
    cut.write_bytes(data[: _record_boundary(cut)])
    (shard_dir / "shard-000007.tar").unlink()
    with pytest.raises(ShardError) as err:
        PixelStream(shard_dir, batch_size=50, resampled=True, steps_per_epoch=5)  # fails at once, no step
    msg = str(err.value)
    assert "2 shard(s)" in msg and "shard-000007.tar: missing" in msg
    assert f"shard-000004.tar: {_record_boundary(cut)} bytes on disk, manifest says {len(data)}" in msg
    assert "skip_corrupt" in msg
    # the record-boundary cut is invisible to the tar reader alone: only the size check catches it
    with pytest.raises(ShardError, match="manifest says"):
        list(iter_shard(str(cut)))
    stream = PixelStream(shard_dir, batch_size=50, shuffle_buffer=0, skip_corrupt=True)
    assert sorted(u.rsplit("/", 1)[1] for u, _ in stream.preflight_skipped) == [
        "shard-000004.tar",
        "shard-000007.tar",
    ]
    assert len(_ids(stream)) == 800


def test_invalid_manifest_and_mixed_shapes_are_named(tmp_path):
    write_shards(make_samples(20, T=12), tmp_path / "t12")
    write_shards(make_samples(20, T=6), tmp_path / "t6")
    mix = [{"shards": str(tmp_path / "t12"), "weight": 1}, {"shards": str(tmp_path / "t6"), "weight": 1}]
    with pytest.raises(ShardError, match=r"t12 and .*t6 cannot be read together.*'timesteps': \(12, 6\)"):
        PixelStream(mix, resampled=True, steps_per_epoch=2)
    (tmp_path / "t6" / "manifest.json").write_text('{"format": "cropssl-shards", "shards": [')
    with pytest.raises(ShardError, match="t6/manifest.json is not valid JSON.*cropssl-shard"):
        PixelStream(str(tmp_path / "t6"))


def test_a_worker_sends_the_same_batches_as_the_stream_makes_in_process(shard_dir):
    """One worker, one shard stream: the batches that cross the process boundary (pickled by value,
    ``Batch.__reduce__``) are those made in-process, tensor for tensor, dtype for dtype, meta included."""
    import torch

    from cropssl.schema import TENSOR_FIELDS

    stream = PixelStream(shard_dir, batch_size=64, shuffle_buffer=200, seed=3)
    local, remote = list(stream), list(make_loader(stream, num_workers=1))
    assert len(local) == len(remote) > 10
    for a, b in zip(local, remote, strict=True):
        for f in TENSOR_FIELDS:
            assert getattr(a, f).dtype == getattr(b, f).dtype
            assert torch.equal(getattr(a, f), getattr(b, f)), f
        assert a.meta == b.meta
