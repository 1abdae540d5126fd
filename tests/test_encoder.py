"""Tests of the Presto-compatible pixel time series encoder (real published weights, no mocks)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.schema import BAND_GROUPS, BANDS, DW_MISSING, GROUP_NAMES, NUM_BANDS, Batch
from tests.conftest import PRESTO, require_shared

WEIGHTS = PRESTO / "default_model.pt"
REFERENCE = PRESTO / "reference_embeddings.npz"


def _inputs(B: int = 8, T: int = 12, seed: int = 0, p_missing: float = 0.2) -> dict[str, torch.Tensor]:
    """Random normalised-looking inputs with different masks per sample."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, NUM_BANDS, generator=g)
    mask = torch.rand(B, T, NUM_BANDS, generator=g) < p_missing
    mask[0] = False  # one sample with nothing missing
    if B > 1:
        mask[1, :, list(BAND_GROUPS["S1"])] = True  # one without S1
    x = x.masked_fill(mask, 0.0)
    start = torch.randint(0, 12, (B, 1), generator=g)
    month = (start + torch.arange(T)) % 12
    latlon = torch.stack([torch.rand(B, generator=g) * 120 - 60, torch.rand(B, generator=g) * 360 - 180], 1)
    dw = torch.randint(0, 10, (B, T), generator=g)
    return {"x": x, "mask": mask, "month": month, "latlon": latlon, "dynamic_world": dw}


KEYS = ("x", "mask", "month", "latlon", "dynamic_world")


def _args(inp: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Positional tensor arguments of the encoder's forward / tokens / embed_tokens."""
    return tuple(inp[k] for k in KEYS)


def _model(**kw: object) -> PixelTimeSeriesEncoder:
    torch.manual_seed(0)
    return PixelTimeSeriesEncoder(**kw).eval()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def presto() -> PixelTimeSeriesEncoder:
    require_shared(WEIGHTS)
    return PixelTimeSeriesEncoder.from_presto(WEIGHTS).eval()


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    require_shared(REFERENCE)
    ref = np.load(REFERENCE)
    assert tuple(str(b) for b in ref["band_names"]) == BANDS
    T = ref["x_normalized"].shape[1]
    return {
        "x": torch.from_numpy(ref["x_normalized"]),
        "mask": torch.from_numpy(ref["mask"].astype(bool)),
        "month": (torch.from_numpy(ref["start_month"])[:, None] + torch.arange(T)) % 12,
        "latlon": torch.from_numpy(ref["latlon"]),
        "dynamic_world": torch.from_numpy(ref["dynamic_world"]),
        "embedding": torch.from_numpy(ref["embedding"]),
    }


# ------------------------------------------------------------ Presto parity
def test_presto_parity_whole_batch(
    presto: PixelTimeSeriesEncoder, reference: dict[str, torch.Tensor]
) -> None:
    batch = Batch(
        x=reference["x"],
        mask=reference["mask"],
        month=reference["month"],
        latlon=reference["latlon"],
        dynamic_world=reference["dynamic_world"],
        label=torch.full((len(reference["x"]),), -1),
    )
    with torch.no_grad():
        emb = presto(batch)
    assert emb.shape == (48, 128)
    err = (emb - reference["embedding"]).abs().max().item()
    print(f"Presto parity: max abs error over 48 samples in one batch = {err:.3g}")
    assert err < 1e-4


def test_presto_parity_without_dynamic_world_tokens(
    presto: PixelTimeSeriesEncoder, reference: dict[str, torch.Tensor]
) -> None:
    # the reference has no Dynamic World (all class 9), so dropping the DW tokens changes nothing
    enc = PixelTimeSeriesEncoder.from_presto(WEIGHTS, use_dynamic_world=False).eval()
    args = [reference[k] for k in ("x", "mask", "month", "latlon", "dynamic_world")]
    with torch.no_grad():
        err = (enc.forward_tensors(*args) - reference["embedding"]).abs().max().item()
    assert err < 1e-4


def test_presto_fixed_tables_and_report(presto: PixelTimeSeriesEncoder) -> None:
    sd = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert presto.max_T == 72 and presto.pos_embed.shape == (72, 64)
    torch.testing.assert_close(presto.pos_embed[:24], sd["encoder.pos_embed"][0], rtol=0, atol=1e-7)
    torch.testing.assert_close(presto.month_embed, sd["encoder.month_embed.weight"], rtol=0, atol=1e-7)
    fresh = _model()
    report = fresh.load_presto_state_dict(sd)
    assert report["missing"] == [] and report["unexpected"] == []
    assert all(k.startswith("decoder.") for k in report["ignored"]) and report["ignored"]
    assert "encoder.blocks.1.mlp.fc2.weight" not in report["loaded"]  # names are reported without prefix
    assert "blocks.1.mlp.fc2.weight" in report["loaded"]
    # a subset of groups takes the matching channel-embedding rows
    sub = _model(groups=["NDVI", "S1"], use_dynamic_world=False)
    rep = sub.load_presto_state_dict(sd)
    assert rep["missing"] == []
    assert "eo_patch_embed.S2_RGB.weight" in rep["unexpected"] and "dw_embed.weight" in rep["unexpected"]
    rows = sd["encoder.channel_embed.weight"][[GROUP_NAMES.index("S1"), GROUP_NAMES.index("NDVI"), 9]]
    torch.testing.assert_close(sub.channel_embed.weight.detach(), rows)


# ------------------------------------------------------------ masking semantics
def test_batch_invariance_with_different_masks() -> None:
    enc = _model()
    inp = _inputs(B=8, seed=1)
    with torch.no_grad():
        together = enc(*_args(inp))
        for i in range(8):
            alone = enc(*_args({k: v[i : i + 1] for k, v in inp.items()}))
            torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-5)


def test_batch_invariance_real_weights(
    presto: PixelTimeSeriesEncoder, reference: dict[str, torch.Tensor]
) -> None:
    args = {k: v for k, v in reference.items() if k != "embedding"}
    with torch.no_grad():
        together = presto(*_args(args))
        for i in (0, 8, 16, 35):  # full, no S1, 3 S2 timesteps removed, mostly missing
            alone = presto(*_args({k: v[i : i + 1] for k, v in args.items()}))
            torch.testing.assert_close(alone[0], together[i], rtol=0, atol=1e-5)


def test_values_under_the_mask_do_not_matter() -> None:
    enc = _model()
    inp = _inputs(B=6, seed=2, p_missing=0.3)
    with torch.no_grad():
        ref = enc(*_args(inp))
        noisy = dict(inp)
        noisy["x"] = torch.where(inp["mask"], torch.randn_like(inp["x"]) * 1e4, inp["x"])
        torch.testing.assert_close(enc(*_args(noisy)), ref, rtol=0, atol=0)
        noisy["x"] = torch.where(inp["mask"], torch.full_like(inp["x"], float("nan")), inp["x"])
        torch.testing.assert_close(enc(*_args(noisy)), ref, rtol=0, atol=0)


def test_a_partly_missing_group_token_is_ignored_entirely() -> None:
    # a token is missing if ANY band of its group is missing: its other bands must not matter either
    enc = _model()
    inp = _inputs(B=2, seed=3, p_missing=0.0)
    b11, b12 = BAND_GROUPS["S2_SWIR"]
    inp["mask"][:, 4, b11] = True
    with torch.no_grad():
        ref = enc(*_args(inp))
        changed = {**inp, "x": inp["x"].clone()}
        changed["x"][:, 4, b12] += 5.0
        torch.testing.assert_close(enc(*_args(changed)), ref, rtol=0, atol=0)
        # while a present token does matter
        changed["x"][:, 5, b12] += 5.0
        assert (enc(*_args(changed)) - ref).abs().max() > 1e-3


def test_a_pixel_without_location_is_encoded_as_by_an_encoder_without_the_token(
    presto: PixelTimeSeriesEncoder, reference: dict[str, torch.Tensor]
) -> None:
    # reference: the same weights in an encoder built without the lat/lon token (use_latlon=False)
    no_token = PixelTimeSeriesEncoder(**{**presto.config, "use_latlon": False}).eval()
    state = {k: v for k, v in presto.state_dict().items() if not k.startswith("latlon_embed")}
    no_token.load_state_dict(state, strict=True)
    inp = {k: reference[k][:16] for k in KEYS}
    lost = inp["latlon"].clone()
    lost[::2, 0] = float("nan")  # lat missing
    lost[1::4, 1] = float("nan")  # lon missing (a NaN in either coordinate loses the location)
    with torch.no_grad():
        with_token = presto(*_args(inp))
        got = presto(*_args({**inp, "latlon": lost}))
        expected = no_token(*_args(inp))
    gone = ~torch.isfinite(lost).all(1)
    assert gone.sum() == 12 and torch.isfinite(got).all()
    torch.testing.assert_close(got[gone], expected[gone], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[~gone], with_token[~gone], rtol=1e-5, atol=1e-5)  # others untouched
    assert (got[gone] - with_token[gone]).abs().max() > 1e-2  # the location did matter


def test_dynamic_world_missing_class_and_fully_missing_sample() -> None:
    enc = _model()
    inp = _inputs(B=3, seed=4)
    inp["dynamic_world"][0] = DW_MISSING
    inp["mask"][2] = True  # nothing observed: only the lat/lon token is left
    with torch.no_grad():
        _, pad = enc.embed_tokens(*_args(inp))
        layout = enc.token_layout(12)
        is_dw = torch.tensor([name == "dynamic_world" for name, _ in layout])
        assert pad[0, is_dw].all() and not pad[1, is_dw].all()
        out = enc(*_args(inp))
    assert torch.isfinite(out).all()
    no_latlon = _model(use_latlon=False)
    everything_missing = {**inp, "dynamic_world": torch.full_like(inp["dynamic_world"], DW_MISSING)}
    with torch.no_grad():
        assert torch.isfinite(no_latlon(*_args(everything_missing))).all()


# ------------------------------------------------------------ shapes and errors
@pytest.mark.parametrize("T", [36, 72])
def test_long_series_up_to_max_t(T: int) -> None:
    enc = _model(max_T=72, depth=1)
    inp = _inputs(B=3, T=T, seed=5)
    with torch.no_grad():
        tok, pad = enc.tokens(*_args(inp))
        out = enc(*_args(inp))
    assert tok.shape == (3, enc.num_tokens(T), 128) and pad.shape == (3, enc.num_tokens(T))
    assert out.shape == (3, 128) and torch.isfinite(out).all()


def test_errors_name_expected_and_got() -> None:
    enc = _model(max_T=72)
    with pytest.raises(ValueError, match=r"T=73.*max_T=72"):
        enc(*_args(_inputs(B=2, T=73)))
    bad = _inputs(B=2)
    bad["x"] = bad["x"][..., :16]
    bad["mask"] = bad["mask"][..., :16]
    with pytest.raises(ValueError, match=r"17 bands.*16"):
        enc(*_args(bad))
    with pytest.raises(ValueError, match="mask"):
        enc(*_args({**_inputs(B=2), "mask": torch.zeros(2, 12, 16, dtype=torch.bool)}))
    with pytest.raises(ValueError, match="unknown channel groups"):
        PixelTimeSeriesEncoder(groups=["S3"])


def test_tokens_and_layout_are_consistent() -> None:
    enc = _model()
    T = 12
    layout = enc.token_layout(T)
    assert len(layout) == enc.num_tokens(T) == 1 + 8 * T + 1 + T
    assert layout[0] == ("latlon", -1)
    assert layout.count(("SRTM", -1)) == 1
    assert [n for n, _ in layout[1 : 1 + T]] == ["S1"] * T and [t for _, t in layout[1 : 1 + T]] == list(
        range(T)
    )
    assert layout[-1] == ("dynamic_world", T - 1)
    assert enc.dynamic_groups == tuple(g for g in GROUP_NAMES if g != "SRTM")

    inp = _inputs(B=4, T=T, seed=6)
    with torch.no_grad():
        tok0, pad0 = enc.embed_tokens(*_args(inp))
        tok, pad = enc.tokens(*_args(inp))
        out = enc(*_args(inp))
    assert tok0.shape == tok.shape == (4, len(layout), enc.embed_dim)
    assert torch.equal(pad0, pad) and pad.dtype == torch.bool
    assert not pad[:, 0].any()  # lat/lon is always there
    # pad mask per token = any band of the group missing at that timestep
    for i, (name, t) in enumerate(layout):
        if name in BAND_GROUPS:
            expected = inp["mask"][:, max(t, 0), list(BAND_GROUPS[name])].any(-1)
            assert torch.equal(pad[:, i], expected), (name, t)
    torch.testing.assert_close(enc.pool(tok, pad), out)
    torch.testing.assert_close(enc.pool(enc.encode(tok0, pad0), pad0), out)

    small = _model(groups=["S2_RGB", "SRTM"], use_dynamic_world=False, use_latlon=False)
    assert small.token_layout(3) == [("S2_RGB", 0), ("S2_RGB", 1), ("S2_RGB", 2), ("SRTM", -1)]
    with torch.no_grad():
        assert small.tokens(*_args(_inputs(B=2, T=3)))[0].shape == (2, 4, 128)


def test_config_round_trip_rebuilds_identical_model() -> None:
    for kw in (
        {},
        {"d": 64, "depth": 1, "heads": 4, "mlp_ratio": 2.0, "max_T": 36, "groups": ["S1", "NDVI"]},
    ):
        enc = _model(**kw)
        cfg = json.loads(json.dumps(enc.config))
        clone = PixelTimeSeriesEncoder(**cfg).eval()
        assert clone.config == enc.config
        clone.load_state_dict(enc.state_dict())
        inp = _inputs(B=3, seed=7)
        with torch.no_grad():
            torch.testing.assert_close(clone(*_args(inp)), enc(*_args(inp)), rtol=0, atol=0)


def test_training_mode_backward_and_drop_path() -> None:
    enc = PixelTimeSeriesEncoder(d=32, depth=2, heads=4, drop_path=0.2).train()
    out = enc(*_args(_inputs(B=4, seed=8)))
    out.pow(2).mean().backward()
    assert enc.eo_patch_embed["S1"].weight.grad is not None
    assert enc.blocks[1].mlp.fc2.weight.grad is not None


def test_forward_is_traceable() -> None:
    enc = _model(d=32, depth=1, heads=4)
    other = _args(_inputs(B=5, seed=10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace is deprecated in favour of torch.export
        traced = torch.jit.trace(enc, _args(_inputs(B=4, seed=9)))
    with torch.no_grad():
        torch.testing.assert_close(traced(*other), enc(*other))


# ------------------------------------------------------------ cost
def test_macs_of_the_default_encoder() -> None:
    from cropssl.profiling import dense_batch, flop_counter

    T = 12
    inp = _inputs(B=1, T=T, seed=11)
    macs = {}
    for name, kw in {"default": {}, "no_dw": {"use_dynamic_world": False}}.items():
        enc = _model(**kw)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            enc(*_args(inp))
        macs[name] = counter.get_total_flops() / 2
    default, no_dw = macs["default"] / 1e6, macs["no_dw"] / 1e6
    print(f"MACs per pixel at T={T}: default {default:.2f}M, without Dynamic World tokens {no_dw:.2f}M")
    assert 30e6 < macs["default"] < 60e6
    assert macs["no_dw"] < macs["default"]

    # torch's counter misses the CPU attention kernel; cropssl's counter adds exactly QK^T and AV:
    # N^2 * d MACs each per layer (summed over heads) for N tokens
    enc = PixelTimeSeriesEncoder().eval()
    batch = dense_batch(1, T)
    with torch.no_grad():
        with FlopCounterMode(display=False) as plain:
            enc(batch)
        with flop_counter() as full:
            enc(batch)
    # the batch has no Dynamic World: its T tokens are left out of the sequence (Presto's 98 of 110)
    n_tokens, d, depth = len(enc.token_layout(T)) - T, enc.embed_dim, 2
    assert n_tokens == 98
    attention = (full.get_total_flops() - plain.get_total_flops()) / 2
    assert attention == depth * 2 * n_tokens**2 * d


def test_dropping_missing_tokens_leaves_the_embedding_unchanged():
    """forward() leaves missing tokens (and absent Dynamic World) out of the sequence; the embeddings equal
    attending over every token with the key-padding mask (today's formulation), per sample."""
    from cropssl.encoder import PixelTimeSeriesEncoder
    from tests.conftest import make_samples

    torch.manual_seed(0)
    enc = PixelTimeSeriesEncoder().eval()
    s = make_samples(40, seed=9)
    s.mask[:5, :, 0:2] = True  # no S1
    s.mask[5:8, 4:] = True  # nothing after month 4
    s.x[s.mask] = 0
    batch = Batch.from_samples(s)
    with torch.inference_mode():
        tok, pad = enc.embed_tokens(batch)
        full = enc.pool(enc.encode(tok, pad), pad)
        got = enc(batch)
    assert int((~pad).sum(1).max()) < pad.shape[1]  # the compacted sequence is shorter
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    # inference in chunks of pixels (each compacted to its own longest sequence) = one whole-batch pass
    assert len(batch) > enc.inference_chunk
    torch.testing.assert_close(enc(batch), full, atol=1e-5, rtol=1e-5)  # with gradients: one pass
    enc.inference_chunk = 7  # chunks that do not divide the batch
    with torch.inference_mode():
        torch.testing.assert_close(enc(batch), full, atol=1e-5, rtol=1e-5)


def test_training_passes_of_similar_lengths_keep_outputs_and_gradients():
    """With gradients on, a batch of very different kept lengths (DINO's local views beside its global
    ones) runs in several passes of similar samples; outputs and parameter gradients equal one pass over
    every token with the key-padding mask."""
    from cropssl.layers import training_pass_size
    from tests.conftest import make_samples

    torch.manual_seed(0)
    enc = PixelTimeSeriesEncoder(d=32, depth=2, heads=4)
    s = make_samples(256, seed=4)
    s.mask[::2, :, 2:] = s.mask[::2, :, 2:] | (torch.rand(128, 12, 1) < 0.7).numpy()  # cloudy half
    s.x[s.mask] = 0
    batch = Batch.from_samples(s)
    tok, pad = enc.embed_tokens(batch, skip_absent_dynamic_world=True)
    kept = (~pad).sum(1)
    assert training_pass_size(kept.sort().values) < len(batch)  # the batch is split
    weights = torch.randn(len(batch), enc.embed_dim)

    def grads(z: torch.Tensor) -> list[torch.Tensor]:
        enc.zero_grad()
        (z * weights).sum().backward()
        return [p.grad.clone() for p in enc.parameters() if p.grad is not None]

    full = enc.pool(enc.encode(tok, pad), pad)
    g_full = grads(full)
    got = enc(batch)
    g_got = grads(got)
    torch.testing.assert_close(got, full, atol=1e-5, rtol=1e-5)
    assert len(g_got) == len(g_full)
    for a, b in zip(g_got, g_full, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_training_pass_size_minimises_the_tokens_processed():
    from cropssl.layers import MIN_PASS_SAMPLES, PASS_OVERHEAD_TOKENS, training_pass_size

    def cost(kept: list[int], size: int) -> int:  # brute force: every pass padded to its longest sample
        chunks = [kept[i : i + size] for i in range(0, len(kept), size)]
        return sum(len(c) * max(c) + PASS_OVERHEAD_TOKENS for c in chunks)

    rng = np.random.default_rng(0)
    assert training_pass_size(torch.full((256,), 98)) == 256  # equal lengths: one pass
    for n in (40, 100, 256, 300, 768):
        kept = sorted(rng.integers(10, 99, n).tolist())
        sizes = [n] + [-(-n // p) for p in (2, 4, 8) if -(-n // p) >= MIN_PASS_SAMPLES]
        best = training_pass_size(torch.tensor(kept))
        assert best in sizes
        assert cost(kept, best) == min(cost(kept, s) for s in sizes)
