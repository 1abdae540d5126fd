import numpy as np
import pytest
import torch

from cropssl.schema import BANDS, NORM_ADD, NORM_DIV, Batch, PixelSamples, normalize
from tests.conftest import PRESTO, make_samples, require_shared


def test_bands_follow_presto_order_and_fixture_constants():
    require_shared(PRESTO / "reference_embeddings.npz")
    ref = np.load(PRESTO / "reference_embeddings.npz")
    assert tuple(str(b) for b in ref["band_names"]) == BANDS
    np.testing.assert_allclose(NORM_ADD, ref["add"])
    np.testing.assert_allclose(NORM_DIV, ref["div"])


def test_normalize_matches_presto_fixture():
    require_shared(PRESTO / "reference_embeddings.npz")
    ref = np.load(PRESTO / "reference_embeddings.npz")
    got = normalize(ref["x_raw"])
    np.testing.assert_allclose(got, ref["x_normalized"], atol=1e-5)


def test_normalize_ndvi_from_normalised_bands_by_hand():
    x = np.zeros((1, 1, 17), np.float32)
    x[0, 0, BANDS.index("B8")] = 3000.0
    x[0, 0, BANDS.index("B4")] = 1000.0
    x[0, 0, BANDS.index("VV")] = -10.0
    x[0, 0, BANDS.index("temperature_2m")] = 290.0
    y = normalize(x)
    assert y[0, 0, BANDS.index("NDVI")] == pytest.approx((0.3 - 0.1) / (0.3 + 0.1))
    assert y[0, 0, BANDS.index("VV")] == pytest.approx((-10 + 25) / 25)
    assert y[0, 0, BANDS.index("temperature_2m")] == pytest.approx((290 - 272.15) / 35, rel=1e-6)
    # zero denominator -> 0, never NaN
    assert normalize(np.zeros((2, 17)))[:, 16].tolist() == [0.0, 0.0]


def test_normalize_zeroes_missing_and_rejects_wrong_band_count():
    s = make_samples(4)
    y = normalize(s.x, s.mask)
    assert (y[s.mask] == 0).all()
    with pytest.raises(ValueError, match="17 bands"):
        normalize(np.zeros((2, 3, 16)))


def test_pixel_samples_validates_shapes():
    s = make_samples(4)
    with pytest.raises(ValueError, match="bands"):
        PixelSamples(s.x[..., :16], s.mask[..., :16], s.month, s.latlon, s.label, s.year, {})
    with pytest.raises(ValueError, match="mask shape"):
        PixelSamples(s.x, s.mask[:, :5], s.month, s.latlon, s.label, s.year, {})


def test_batch_from_samples():
    s = make_samples(5, T=7)
    b = Batch.from_samples(s)
    assert b.x.shape == (5, 7, 17) and b.x.dtype == torch.float32
    assert b.mask.dtype == torch.bool and b.month.dtype == torch.int64
    assert (b.dynamic_world == 9).all()
    assert b.meta["sample_id"][0] == "s0_00000"
    assert len(b.to("cpu")) == 5


@pytest.mark.parametrize(
    "idx",
    [slice(2, 6), np.array([5, 0, 3]), torch.tensor([1, 1, 4]), np.arange(8) % 3 == 0],
    ids=["slice", "numpy", "tensor", "bool"],
)
def test_batch_select_equals_the_batch_of_the_selected_samples(idx):
    s = make_samples(8, T=5)
    got = Batch.from_samples(s).select(idx)
    ref = Batch.from_samples(s.select(np.asarray(idx) if isinstance(idx, torch.Tensor) else idx))
    for f in ("x", "mask", "month", "latlon", "dynamic_world", "label"):
        assert torch.equal(getattr(got, f), getattr(ref, f)), f
    assert got.meta == {}


def test_batch_concat_inverts_select():
    b = Batch.from_samples(make_samples(7, seed=2))
    back = Batch.concat([b.select(slice(0, 3)), b.select(slice(3, None))])
    for f in ("x", "mask", "month", "latlon", "dynamic_world", "label"):
        assert torch.equal(getattr(back, f), getattr(b, f)), f
    assert back.meta == {} and Batch.concat([b]).meta is b.meta
    with pytest.raises(ValueError, match="nothing"):
        Batch.concat([])


def test_a_batch_pickles_cpu_tensors_by_value_and_other_tensors_the_default_way():
    """A DataLoader worker's batch goes through a pipe: CPU tensors travel as their bytes (no shared-memory
    segment per tensor), come back equal and writable; bfloat16 / grad tensors keep torch's own pickling."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    b = Batch.from_samples(make_samples(64, seed=1))
    payload = bytes(ForkingPickler.dumps(b))
    tensor_bytes = sum(t.numel() * t.element_size() for t in (b.x, b.mask, b.month, b.latlon))
    assert len(payload) > tensor_bytes  # the values themselves, not handles to shared memory
    back = pickle.loads(payload)
    for name in ("x", "mask", "month", "latlon", "dynamic_world", "label"):
        got, want = getattr(back, name), getattr(b, name)
        assert got.dtype == want.dtype and torch.equal(got, want), name
    assert back.meta == b.meta
    back.x += 1  # writable, and not the original's memory
    assert not torch.equal(back.x, b.x)
    odd = b.replace(x=b.x.bfloat16(), latlon=b.latlon.clone().requires_grad_())
    again = pickle.loads(pickle.dumps(odd))
    assert again.x.dtype == torch.bfloat16 and torch.equal(again.x, odd.x)
    assert torch.equal(again.latlon.detach(), odd.latlon.detach())
