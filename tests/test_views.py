"""Views: every transform keeps the missing-data invariants, does what it says, and is reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from cropssl import views as V
from cropssl.config import CONFIG_DIR, check_target_keys
from cropssl.schema import BAND_GROUPS, BAND_INDEX, DW_MISSING, GROUP_NAMES, NUM_BANDS, SENSOR_GROUPS, Batch
from tests.conftest import make_samples

S1 = V.band_mask(SENSOR_GROUPS["S1"])
S2 = V.band_mask(SENSOR_GROUPS["S2"])
SRTM = V.band_mask(("SRTM",))
TIME_BAND = BAND_INDEX["temperature_2m"]  # carries the original timestep index in the tests
AUGMENT_CONFIGS = sorted((CONFIG_DIR / "augment").glob("*.yaml"))


def augment_config(name: str):
    """``configs/augment/<name>.yaml`` as Hydra composes it (windowed / dino build on default)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose(config_name="pretrain", overrides=[f"augment={name}"]).augment


def make_batch(n: int = 512, T: int = 12, seed: int = 0) -> Batch:
    """A batch with extra random gaps, some pixels without S1 or without S2, and Dynamic World classes."""
    rng = np.random.default_rng(seed)
    s = make_samples(n=n, T=T, seed=seed)
    s.mask |= rng.random(s.mask.shape) < 0.05
    s.mask[:, :, TIME_BAND] = False  # the time band is always present...
    s.mask[:, :, [14, 15]] = s.mask[:, :1, [14, 15]]  # ...and SRTM is static
    s.mask[: n // 16][:, :, S1.numpy()] = True  # no S1 at all
    s.mask[n // 16 : n // 8][:, :, S2.numpy()] = True  # no S2 at all
    s.x[s.mask] = 0
    s.dynamic_world = rng.integers(0, 10, (n, T)).astype(np.int8)
    b = Batch.from_samples(s)
    x = b.x.clone()
    x[:, :, TIME_BAND] = torch.arange(T, dtype=x.dtype)[None, :] + 1.0  # 1..T: identifies each step
    return b.replace(x=x)


@pytest.fixture(scope="module")
def batch() -> Batch:
    return make_batch()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_invariants(
    before: Batch, after: Batch, *, same_time: bool = True, same_place: bool = True
) -> None:
    """x == 0 where missing; shapes; with the same time axis: the mask only grows, the rest is kept.

    ``same_place=False`` lets the location move (LatLonJitter), within valid coordinates, or be hidden
    (LatLonDropout: both coordinates NaN).
    """
    assert after.x.shape == after.mask.shape and after.x.shape[-1] == NUM_BANDS
    assert after.month.shape == after.x.shape[:2] == after.dynamic_world.shape
    assert after.mask.dtype == torch.bool
    assert (after.x[after.mask] == 0).all(), "a missing value is not 0"
    assert int(after.month.min()) >= 0 and int(after.month.max()) <= 11
    assert torch.equal(after.label, before.label)
    if same_place:
        assert torch.equal(after.latlon, before.latlon)
    else:
        known = torch.isfinite(after.latlon)
        assert torch.equal(known[:, 0], known[:, 1]), "a location was half hidden"
        ll = after.latlon[known[:, 0]]
        assert (ll[:, 0].abs() <= 90).all() and (ll[:, 1].abs() <= 180).all()
    if same_time:
        assert after.x.shape == before.x.shape
        assert not (before.mask & ~after.mask).any(), "a missing value became present"
        assert torch.equal(after.month, before.month)
        changed_dw = after.dynamic_world != before.dynamic_world
        assert (after.dynamic_world[changed_dw] == DW_MISSING).all(), "Dynamic World was invented"


ALL_TRANSFORMS = {
    "window": V.RandomTemporalWindow(4, 10),
    "timestep": V.TimestepDropout(0.3),
    "sensor": V.SensorDropout(1.0),
    "group": V.ChannelGroupDropout(0.5),
    "cloud": V.SyntheticCloudMask(0.5),
    "noise": V.GaussianNoise(0.1),
    "jitter": V.MultiplicativeJitter(0.1),
    "latlon": V.LatLonJitter(2.0),
    "latlon_drop": V.LatLonDropout(0.5),
}


@pytest.mark.parametrize("name", list(ALL_TRANSFORMS))
def test_every_transform_keeps_the_invariants_and_does_not_mutate(batch: Batch, name: str) -> None:
    copy = {k: getattr(batch, k).clone() for k in ("x", "mask", "month", "dynamic_world", "latlon")}
    out = ALL_TRANSFORMS[name](batch, gen())
    assert_invariants(batch, out, same_time=name != "window", same_place=not name.startswith("latlon"))
    for k, v in copy.items():
        assert torch.equal(getattr(batch, k), v), f"{name} modified the input's {k}"


@pytest.mark.parametrize("name", [n for n in ALL_TRANSFORMS if n != "window"])
def test_p_zero_is_the_identity(batch: Batch, name: str) -> None:
    t = ALL_TRANSFORMS[name]
    cls = type(t)
    kwargs = {k: v for k, v in vars(t).items() if not k.startswith("_") and k not in ("p", "groups")}
    if "std" in kwargs:
        kwargs["std"] = 0.1
    out = cls(**kwargs, p=0.0)(batch, gen())
    for k in ("x", "mask", "month", "dynamic_world", "latlon"):
        assert torch.equal(getattr(out, k), getattr(batch, k))


# ------------------------------------------------------------------ temporal window
def original_steps(out: Batch) -> torch.Tensor:
    """Original timestep (0-based) of each output step, -1 on padding (read from the time band)."""
    return torch.where(out.mask[:, :, TIME_BAND], -1, out.x[:, :, TIME_BAND].round().long() - 1)


@pytest.mark.parametrize(("min_len", "max_len"), [(4, 10), (6, 6), (1, None), (12, 12)])
def test_temporal_window_moves_steps_with_their_months(
    batch: Batch, min_len: int, max_len: int | None
) -> None:
    out = V.RandomTemporalWindow(min_len, max_len)(batch, gen(1))
    assert_invariants(batch, out, same_time=False)
    hi = 12 if max_len is None else max_len
    src = original_steps(out)
    valid = src >= 0
    lengths = valid.sum(1)
    assert int(lengths.min()) >= min_len and int(lengths.max()) <= hi
    assert out.x.shape[1] == int(lengths.max())
    if min_len == hi:
        assert out.x.shape[1] == hi
    # kept steps are a contiguous run starting at position 0, followed only by padding
    pos = torch.arange(out.x.shape[1])
    assert torch.equal(valid, pos[None] < lengths[:, None])
    start = src[:, 0]
    assert torch.equal(src[valid], (start[:, None] + pos[None]).expand_as(src)[valid])
    assert int((start + lengths).max()) <= 12
    # every field of a kept step travels with it
    b_idx = torch.arange(len(batch))[:, None].expand_as(src)
    gathered = (b_idx[valid], src[valid])
    assert torch.equal(out.month[valid], batch.month[gathered])
    assert torch.equal(out.dynamic_world[valid], batch.dynamic_world[gathered])
    assert torch.equal(out.mask[valid], batch.mask[gathered])
    assert torch.equal(out.x[valid], batch.x[gathered])
    # padding is missing everywhere
    assert out.mask[~valid].all() and (out.x[~valid] == 0).all()
    assert (out.dynamic_world[~valid] == DW_MISSING).all()
    # the window start varies between samples
    if hi < 12:
        assert len(torch.unique(start)) > 1


def test_temporal_window_lengths_are_uniform(batch: Batch) -> None:
    lengths = (original_steps(V.RandomTemporalWindow(4, 8)(batch, gen(2))) >= 0).sum(1)
    counts = torch.bincount(lengths, minlength=9)[4:9].float()
    assert (counts > len(batch) / 5 * 0.6).all(), counts


def test_temporal_window_p_keeps_full_sequences(batch: Batch) -> None:
    out = V.RandomTemporalWindow(4, 6, p=0.3)(batch, gen(3))
    full = (original_steps(out) >= 0).sum(1) == 12
    assert out.x.shape[1] == 12
    assert abs(float(full.float().mean()) - 0.7) < 0.07
    assert torch.equal(out.x[full], batch.x[full])


def test_temporal_window_rejects_too_short_sequences(batch: Batch) -> None:
    with pytest.raises(ValueError, match="too short for a temporal window of min_len=13"):
        V.RandomTemporalWindow(13)(batch)
    with pytest.raises(ValueError, match="max_len"):
        V.RandomTemporalWindow(6, 4)


# ------------------------------------------------------------------ masking transforms
def new_hidden(before: Batch, after: Batch) -> torch.Tensor:
    return after.mask & ~before.mask


def test_timestep_dropout_hides_whole_dynamic_steps(batch: Batch) -> None:
    out = V.TimestepDropout(0.3)(batch, gen(4))
    new = new_hidden(batch, out)
    dropped = new[:, :, TIME_BAND]  # the time band is always present before, so it tells dropped steps
    dynamic = ~SRTM
    assert torch.equal(out.mask[:, :, dynamic], (batch.mask | dropped[:, :, None])[:, :, dynamic])
    assert torch.equal(out.mask[:, :, SRTM], batch.mask[:, :, SRTM]), "static bands were hidden"
    assert (out.dynamic_world[dropped] == DW_MISSING).all()
    assert torch.equal(out.dynamic_world[~dropped], batch.dynamic_world[~dropped])
    assert (~dropped).any(1).all(), "a sample lost every step"
    assert abs(float(dropped.float().mean()) - 0.3) < 0.03


def test_timestep_dropout_spares_one_step_even_at_p_one(batch: Batch) -> None:
    dropped = new_hidden(batch, V.TimestepDropout(1.0)(batch, gen()))[:, :, TIME_BAND]
    assert torch.equal(dropped.sum(1), torch.full((len(batch),), 11))


def test_sensor_dropout_removes_exactly_one_sensor_and_never_both(batch: Batch) -> None:
    out = V.SensorDropout(p=1.0)(batch, gen(5))
    assert_invariants(batch, out)
    has = lambda b, sel: (~b.mask[:, :, sel]).flatten(1).any(1)  # noqa: E731
    had_s1, had_s2 = has(batch, S1), has(batch, S2)
    now_s1, now_s2 = has(out, S1), has(out, S2)
    assert not (had_s1 | had_s2).logical_and(~now_s1 & ~now_s2).any(), "both sensors removed"
    lost_s1 = out.mask[:, :, S1].flatten(1).all(1) & ~batch.mask[:, :, S1].flatten(1).all(1)
    lost_s2 = out.mask[:, :, S2].flatten(1).all(1) & ~batch.mask[:, :, S2].flatten(1).all(1)
    assert not (lost_s1 & lost_s2).any()
    both = had_s1 & had_s2
    assert (lost_s1 ^ lost_s2)[both].all(), "with p=1 every pixel with both sensors loses exactly one"
    # nothing but the dropped sensor's bands changes
    other = ~(S1 | S2)
    assert torch.equal(out.mask[:, :, other], batch.mask[:, :, other])
    assert torch.equal(out.mask[lost_s1][:, :, S2], batch.mask[lost_s1][:, :, S2])
    assert torch.equal(out.mask[lost_s2][:, :, S1], batch.mask[lost_s2][:, :, S1])
    # Dynamic World goes with S2 only
    assert (out.dynamic_world[lost_s2] == DW_MISSING).all()
    assert torch.equal(out.dynamic_world[~lost_s2], batch.dynamic_world[~lost_s2])
    # a pixel that has only one sensor keeps it
    assert not (lost_s1 & ~had_s2).any() and not (lost_s2 & ~had_s1).any()


def test_sensor_dropout_probabilities(batch: Batch) -> None:
    big = make_batch(n=4000, seed=1)
    out = V.SensorDropout(p=0.3, p_s1=0.25)(big, gen(6))
    changed = (out.mask != big.mask).flatten(1).any(1)
    lost_s1 = out.mask[:, :, S1].flatten(1).all(1) & ~big.mask[:, :, S1].flatten(1).all(1)
    both = ((~big.mask[:, :, S1]).flatten(1).any(1)) & ((~big.mask[:, :, S2]).flatten(1).any(1))
    assert abs(float(changed[both].float().mean()) - 0.3) < 0.03
    assert abs(float(lost_s1[both & changed].float().mean()) - 0.25) < 0.05


def test_channel_group_dropout_drops_whole_groups_and_keeps_one(batch: Batch) -> None:
    out = V.ChannelGroupDropout(0.4)(batch, gen(7))
    assert_invariants(batch, out)
    for g in GROUP_NAMES:
        idx = list(BAND_GROUPS[g])
        newly = new_hidden(batch, out)[:, :, idx].flatten(1).any(1)
        # a touched group is entirely missing afterwards
        assert out.mask[newly][:, :, idx].all()
    assert (~out.mask).flatten(1).any(1).all(), "a sample lost every group"
    frac = float(new_hidden(batch, out)[:, :, BAND_INDEX["VV"]].flatten(1).any(1).float().mean())
    assert 0.3 < frac < 0.45
    everything = V.ChannelGroupDropout(1.0)(batch, gen(8))
    present_groups = torch.stack(
        [(~everything.mask[:, :, list(BAND_GROUPS[g])]).flatten(1).any(1) for g in GROUP_NAMES], 1
    )
    assert torch.equal(present_groups.sum(1), torch.ones(len(batch), dtype=torch.long))


def test_channel_group_dropout_respects_the_group_list(batch: Batch) -> None:
    out = V.ChannelGroupDropout(1.0, groups=["S1", "ERA5"])(batch, gen())
    changed = new_hidden(batch, out).any(0).any(0)
    assert torch.equal(changed, V.band_mask(["S1", "ERA5"]) & changed)
    with pytest.raises(ValueError, match="unknown channel groups"):
        V.ChannelGroupDropout(0.5, groups=["S3"])


def test_cloud_mask_hits_s2_and_ndvi_only(batch: Batch) -> None:
    out = V.SyntheticCloudMask(0.4)(batch, gen(9))
    assert_invariants(batch, out)
    new = new_hidden(batch, out)
    assert not new[:, :, ~S2].any(), "clouds hid a non-optical band"
    cloudy = (out.mask[:, :, S2].all(-1)) & ~(batch.mask[:, :, S2].all(-1))
    assert torch.equal(new.any(-1), cloudy), "a cloud hid only part of the S2 bands of a step"
    assert (out.dynamic_world[cloudy] == DW_MISSING).all()
    candidates = ~batch.mask[:, :, S2].all(-1)
    assert abs(float(cloudy[candidates].float().mean()) - 0.4) < 0.03
    assert torch.equal(out.x[:, :, ~S2], batch.x[:, :, ~S2])


# ------------------------------------------------------------------ value transforms
def test_gaussian_noise_only_touches_present_values(batch: Batch) -> None:
    out = V.GaussianNoise(0.1)(batch, gen(10))
    assert_invariants(batch, out)
    assert torch.equal(out.mask, batch.mask)
    diff = (out.x - batch.x)[~batch.mask]
    assert abs(float(diff.std()) - 0.1) < 0.005 and abs(float(diff.mean())) < 0.005
    per_band = V.GaussianNoise([0.0] * 16 + [0.2])(batch, gen(10))
    d = per_band.x - batch.x
    assert (d[:, :, :16] == 0).all() and float(d[:, :, 16][~batch.mask[:, :, 16]].std()) > 0.15


def test_multiplicative_jitter_is_one_gain_per_sample_and_band(batch: Batch) -> None:
    out = V.MultiplicativeJitter(0.1)(batch, gen(11))
    assert_invariants(batch, out)
    ok = ~batch.mask & (batch.x.abs() > 1e-3)
    ratio = out.x / torch.where(ok, batch.x, 1.0)
    hi = torch.where(ok, ratio, -torch.inf).amax(1)
    lo = torch.where(ok, ratio, torch.inf).amin(1)
    seen = ok.any(1)
    assert float((hi - lo)[seen].max()) < 1e-4, "the gain changes over time"
    gains = ratio[:, 0, TIME_BAND]
    assert abs(float(gains.std()) - 0.1) < 0.01


def test_latlon_jitter_moves_only_the_location_by_the_given_std(batch: Batch) -> None:
    rng = torch.Generator().manual_seed(0)
    mid = batch.replace(latlon=torch.stack([torch.rand(len(batch), generator=rng) * 120 - 60] * 2, 1))
    a, b = V.LatLonJitter(2.0)(mid, gen(13)), V.LatLonJitter(2.0)(mid, gen(14))
    d = a.latlon - mid.latlon
    assert abs(float(d.std()) - 2.0) < 0.15 and abs(float(d.mean())) < 0.2
    assert torch.equal(a.x, mid.x) and torch.equal(a.mask, mid.mask)
    assert not torch.equal(a.latlon, b.latlon)  # two views disagree on the location
    assert torch.equal(a.latlon, V.LatLonJitter(2.0)(mid, gen(13)).latlon)  # reproducible
    with pytest.raises(ValueError, match="std_deg"):
        V.LatLonJitter(-1.0)


def test_latlon_jitter_clips_latitude_and_wraps_longitude() -> None:
    n = 2000
    base = make_batch(n=n, seed=3)
    t = V.LatLonJitter(5.0)
    noise = t(base.replace(latlon=torch.zeros(n, 2)), gen(15)).latlon  # the draws, unwrapped at (0, 0)
    edge = torch.tensor([[89.0, 178.0], [-89.0, -178.0]]).repeat(n // 2, 1)
    out = t(base.replace(latlon=edge), gen(15)).latlon
    assert float(out[:, 0].abs().max()) == 90.0  # some latitudes ran past a pole and stop there
    torch.testing.assert_close(out[:, 0], (edge[:, 0] + noise[:, 0]).clamp(-90, 90))
    assert bool(((out[:, 1] >= -180) & (out[:, 1] < 180)).all())
    crossed = (edge[:, 1] + noise[:, 1]).abs() > 180
    assert bool(crossed.any())
    moved = torch.deg2rad(edge[:, 1] + noise[:, 1])  # same point on the circle
    for f in (torch.cos, torch.sin):
        torch.testing.assert_close(f(torch.deg2rad(out[:, 1])), f(moved), atol=1e-4, rtol=0)


def test_latlon_dropout_hides_whole_locations_of_a_share_p_and_nothing_else() -> None:
    big = make_batch(n=4000, seed=5)
    out = V.LatLonDropout(0.3)(big, gen(16))
    hidden = torch.isnan(out.latlon)
    assert torch.equal(hidden[:, 0], hidden[:, 1]) and abs(float(hidden[:, 0].float().mean()) - 0.3) < 0.03
    assert torch.equal(out.latlon[~hidden[:, 0]], big.latlon[~hidden[:, 0]])
    assert torch.equal(out.x, big.x) and torch.equal(out.mask, big.mask)
    assert torch.equal(hidden, torch.isnan(V.LatLonDropout(0.3)(big, gen(16)).latlon))  # reproducible
    # a hidden location stays hidden through the jitter that may follow it
    assert torch.equal(torch.isnan(V.LatLonJitter(1.0)(out, gen(17)).latlon), hidden)


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_per_sample_probability_is_respected(p: float) -> None:
    big = make_batch(n=4000, seed=2)
    out = V.GaussianNoise(0.1, p=p)(big, gen(12))
    changed = (out.x != big.x).flatten(1).any(1).float().mean()
    assert abs(float(changed) - p) < 0.03


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="probability"):
        V.TimestepDropout(1.5)
    with pytest.raises(ValueError, match="probability"):
        V.GaussianNoise(0.1, p=-0.1)
    with pytest.raises(ValueError, match="per-band"):
        V.GaussianNoise([0.1, 0.2])


# ------------------------------------------------------------------ composition, views, determinism
def full_pipeline() -> V.Compose:
    return V.Compose(
        [V.RandomTemporalWindow(6, 12, p=0.5), *(t for n, t in ALL_TRANSFORMS.items() if n != "window")]
    )


def test_compose_is_deterministic_with_a_seeded_generator(batch: Batch) -> None:
    t = full_pipeline()
    a, b, c = t(batch, gen(42)), t(batch, gen(42)), t(batch, gen(43))
    assert_invariants(batch, a, same_time=False, same_place=False)
    for k in ("x", "mask", "month", "dynamic_world", "latlon"):
        torch.testing.assert_close(getattr(a, k), getattr(b, k), rtol=0, atol=0, equal_nan=True)
    assert not torch.equal(a.mask, c.mask)
    torch.manual_seed(0)
    d = t(batch)
    torch.manual_seed(0)
    e = t(batch)
    assert torch.equal(d.x, e.x)


def test_compose_by_name_applies_the_mapping_in_order_and_leaves_out_none(batch: Batch) -> None:
    noise, clouds, window = V.GaussianNoise(0.1), V.SyntheticCloudMask(0.5), V.RandomTemporalWindow(6, 12)
    named = V.Compose({"noise": noise, "dropped": None, "clouds": clouds, "window": window})
    assert named.names == ("noise", "clouds", "window") and len(named) == 3
    assert named["clouds"] is clouds and named[2] is window
    with pytest.raises(KeyError, match=r"no transform named 'cloud'.*\['noise', 'clouds', 'window'\]"):
        named["cloud"]
    # the same draws as applying the three by hand in that order (and not in another order)
    g = gen(3)
    expected = window(clouds(noise(batch, g), g), g)
    out = named(batch, gen(3))
    for k in ("x", "mask", "month"):
        assert torch.equal(getattr(out, k), getattr(expected, k))
    g = gen(3)
    other = noise(window(clouds(batch, g), g), g)
    assert not torch.equal(out.mask, other.mask)


def test_view_generator_makes_global_and_local_views(batch: Batch) -> None:
    local = V.Compose([V.RandomTemporalWindow(4, 6), V.GaussianNoise(0.05)])
    vg = V.ViewGenerator(full_pipeline(), n_global=2, local_transform=local, n_local=4)
    views = vg(batch, gen(0))
    assert len(views) == vg.n_views == 6
    for v in views:
        assert_invariants(batch, v, same_time=False, same_place=False)
    assert all(v.x.shape[1] >= 6 for v in views[:2])
    assert all(4 <= v.x.shape[1] <= 6 for v in views[2:])
    assert not torch.equal(views[0].x, views[1].x), "the two global views are identical"
    assert V.ViewGenerator(None, n_global=1)(batch)[0] is batch


def test_view_generator_bad_input(batch: Batch) -> None:
    short = make_batch(n=8, T=6)
    vg = V.ViewGenerator(full_pipeline(), local_transform=V.RandomTemporalWindow(4, 6), n_local=2)
    with pytest.raises(ValueError, match=r"DINO local views need T > local_len .*T=6, local_len=6"):
        vg(short)
    vg(batch)  # T=12 is fine
    with pytest.raises(ValueError, match="too short for the requested temporal window min_len=8"):
        V.ViewGenerator(V.RandomTemporalWindow(8))(short)
    # a window that is never applied (the default config's p=0) does not need the length
    off = V.ViewGenerator(V.RandomTemporalWindow(8, p=0.0))(short)
    assert all(torch.equal(v.x, short.x) and torch.equal(v.month, short.month) for v in off)
    with pytest.raises(ValueError, match="need a local_transform"):
        V.ViewGenerator(None, n_local=2)
    # local views without any window keep the season (T is not constrained)
    masked = V.ViewGenerator(None, local_transform=V.SyntheticCloudMask(0.6), n_local=2)
    assert masked.local_len() is None
    assert all(v.x.shape == short.x.shape for v in masked(short, gen(0)))
    with pytest.raises(ValueError, match="n_global"):
        V.ViewGenerator(None, n_global=0)


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize("path", AUGMENT_CONFIGS, ids=lambda p: p.stem)
def test_augment_configs_instantiate_and_make_valid_views(path: Path, batch: Batch) -> None:
    cfg = augment_config(path.stem)
    check_target_keys(cfg, f"augment/{path.stem}")
    vg = instantiate(cfg)
    assert isinstance(vg, V.ViewGenerator)
    views = vg(batch, gen(0))
    assert len(views) == vg.n_views
    for v in views:
        assert_invariants(batch, v, same_time=False)


def test_augment_configs_compose_through_hydra() -> None:
    assert {p.stem for p in AUGMENT_CONFIGS} == {"default", "dino", "none", "windowed"}
    for name, n_views in [("default", 2), ("dino", 6), ("none", 1), ("windowed", 2)]:
        assert instantiate(augment_config(name)).n_views == n_views


def test_dino_default_local_views_keep_the_season_and_hide_more_of_sentinel2() -> None:
    """augment=dino: local views are full-length (so they work at T=6 too) and hide more Sentinel-2 than
    the global ones (clouds on 60% of the steps of every local view, 20% in 80% of the global ones)."""
    vg = instantiate(augment_config("dino"))
    for T in (12, 6):
        batch = make_batch(2048, T=T, seed=3)
        views = vg(batch, gen(1))
        assert all(v.x.shape == batch.x.shape for v in views)  # no temporal window by default
        b8 = BAND_INDEX["B8"]
        present = ~batch.mask[..., b8]
        hidden = [((v.mask[..., b8]) & present).sum().item() / present.sum().item() for v in views]
        g, loc = np.mean(hidden[: vg.n_global]), np.mean(hidden[vg.n_global :])
        # P(a present B8 value survives), the transforms acting independently: global = timestep dropout
        # 0.9 x S2-sensor dropout (1 - 0.2 x 0.5) x channel-group dropout 0.9 x clouds (1 - 0.8 x 0.2);
        # local = S2-sensor dropout 0.9 x clouds (1 - 0.6)
        assert g == pytest.approx(1 - 0.9 * 0.9 * 0.9 * 0.84, abs=0.03), T
        assert loc == pytest.approx(1 - 0.9 * 0.4, abs=0.03), T
    # the windows are still there, and when turned on the T > local_len rule applies again
    vg.local_transform["window"].p = 1.0
    with pytest.raises(ValueError, match="DINO local views need T > local_len"):
        vg(make_batch(16, T=6), gen(0))
