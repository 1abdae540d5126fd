"""The visible-token MAE against the all-token formulation, the loss by hand, and which tokens are hidden."""

from __future__ import annotations

import pytest
import torch

from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.heads import attn_mask_from_padding
from cropssl.methods.mae import MAE
from cropssl.schema import BAND_GROUPS, STATIC_GROUPS, Batch
from tests.conftest import make_samples


def _mae(**enc) -> MAE:
    torch.manual_seed(0)
    cfg = {"d": 64, "depth": 2, "heads": 4, **enc}
    return MAE(
        PixelTimeSeriesEncoder(**cfg), decoder_dim=48, decoder_depth=2, decoder_heads=4, band_norm=False
    ).eval()


def _batch(n: int = 24, T: int = 12, seed: int = 0) -> Batch:
    s = make_samples(n, T=T, seed=seed)  # 30 % of S2 months cloudy: missing tokens in every sample
    s.mask[:3, :, 0:2] = True  # and S1 missing entirely for three samples
    s.x[s.mask] = 0
    return Batch.from_samples(s)


def _all_token_reference(mae: MAE, batch: Batch, hide: torch.Tensor) -> torch.Tensor:
    """Today's formulation: every token through the encoder and decoder, hidden + missing tokens excluded as
    attention keys (written out here independently of the method's code)."""
    enc, dec = mae.encoder, mae.decoder
    B, T = batch.x.shape[:2]
    type_ids, times, grid = mae._layout(T, batch.x.device)
    tokens, pad = enc.embed_tokens(batch)
    encoded = enc.encode(tokens, pad | hide)
    x = dec.proj(encoded)
    x = torch.where((hide & ~pad)[..., None], dec.mask_token, x)
    N = x.shape[1]
    month = torch.where(times[None] >= 0, batch.month.gather(1, times.clamp(min=0)[None].expand(B, N)), 12)
    x = x + dec.type_embed(type_ids)[None] + dec.time_embed[times + 1][None] + dec.month_embed(month)
    for blk in dec.blocks:
        x = blk(x, attn_mask=attn_mask_from_padding(pad))
    x = dec.norm(x)[:, grid].reshape(B, T, len(mae.groups), -1)
    out = torch.zeros(B, T, 17)
    for g, (name, head) in enumerate(zip(mae.groups, dec.heads, strict=True)):
        out[..., list(BAND_GROUPS[name])] = head(x[:, :, g])
    return out


def _targets(mae: MAE, batch: Batch, hide: torch.Tensor) -> torch.Tensor:
    """[B, T, 17] True for the values of hidden dynamic tokens that exist in the data."""
    B, T = batch.x.shape[:2]
    _, pad = mae.encoder.embed_tokens(batch)
    _, _, grid = mae._layout(T, batch.x.device)
    tok = (hide & ~pad)[:, grid].reshape(B, T, len(mae.groups))
    out = torch.zeros_like(batch.mask)
    for g, name in enumerate(mae.groups):
        for i in BAND_GROUPS[name]:
            out[..., i] = tok[..., g]
    return out & ~batch.mask


@pytest.mark.parametrize("variant", ["plain", "dynamic_world", "no_location"])
def test_visible_token_mae_equals_the_all_token_formulation(variant):
    mae = _mae()
    batch = _batch()
    if variant == "dynamic_world":  # some Dynamic World observed: their tokens are visible, not padded
        dw = torch.randint(0, 10, batch.month.shape)
        batch = batch.replace(dynamic_world=dw)
    if variant == "no_location":  # pixels without lat/lon: their (non-dynamic) lat/lon token is padded
        batch = batch.replace(latlon=batch.latlon.index_fill(0, torch.arange(0, len(batch), 3), float("nan")))
    hide = mae.hidden_tokens(len(batch), 12, batch.x.device)
    with torch.no_grad():
        pred, _, empty = mae.reconstruct(batch, hide)
        ref = _all_token_reference(mae, batch, hide)
    t = _targets(mae, batch, hide)
    assert t.sum() > 100 and not empty.any()
    torch.testing.assert_close(pred[t], ref[t], atol=1e-5, rtol=1e-5)
    # and the loss and its gradients
    mae.train()
    loss = mae.loss_fn(mae.reconstruct(batch, hide)[0], batch.x, t)
    grads = torch.autograd.grad(loss, [mae.encoder.blocks[0].attn.qkv.weight, mae.decoder.mask_token])
    ref_loss = mae.loss_fn(_all_token_reference(mae, batch, hide), batch.x, t)
    ref_grads = torch.autograd.grad(ref_loss, [mae.encoder.blocks[0].attn.qkv.weight, mae.decoder.mask_token])
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_loss_by_hand_is_the_mse_over_hidden_present_values():
    mae = _mae().train()
    batch = _batch(seed=3)
    mae.rng.manual_seed(7)
    hide = mae.hidden_tokens(len(batch), 12, batch.x.device)
    with torch.no_grad():
        pred, _, _ = mae.reconstruct(batch, hide)
    total, count = 0.0, 0
    _, pad = mae.encoder.embed_tokens(batch)
    layout = mae.encoder.token_layout(12)
    pos = {key: i for i, key in enumerate(layout)}
    for b in range(len(batch)):
        for t in range(12):
            for g in mae.groups:
                i = pos[(g, t)]
                if not hide[b, i] or pad[b, i]:
                    continue
                for band in BAND_GROUPS[g]:
                    assert not batch.mask[b, t, band]  # a present token has all its values
                    total += float((pred[b, t, band] - batch.x[b, t, band]) ** 2)
                    count += 1
    mae.rng.manual_seed(7)
    with torch.no_grad():
        loss, logs = mae.shared_step(batch)
    assert count > 100
    assert float(loss) == pytest.approx(total / count, rel=1e-5)
    assert float(logs["skipped_samples"]) == 0
    # the default (band_norm): each band's squared errors over its variance among the same targets
    t = _targets(mae, batch, hide)
    weighted, n = 0.0, int(t.sum())
    for band in range(17):
        sel = t[..., band]
        if sel.any():
            v = batch.x[..., band][sel]
            var = max(float(((v - v.mean()) ** 2).mean()), 1e-4)
            weighted += float(((pred[..., band][sel] - v) ** 2).sum()) / var
    mae.loss_fn.band_norm = True
    mae.rng.manual_seed(7)
    with torch.no_grad():
        loss, _ = mae.shared_step(batch)
    assert float(loss) == pytest.approx(weighted / n, rel=1e-4)


@pytest.mark.parametrize(("T", "ratio"), [(12, 0.75), (5, 0.5), (24, 0.9)])
def test_only_dynamic_tokens_are_hidden_and_exactly_the_ratio(T, ratio):
    enc = PixelTimeSeriesEncoder(d=32, depth=1, heads=4)
    mae = MAE(enc, mask_ratio=ratio, decoder_dim=32, decoder_depth=1, decoder_heads=4)
    hide = mae.hidden_tokens(64, T, torch.device("cpu"))
    layout = enc.token_layout(T)
    never = [i for i, (name, _) in enumerate(layout) if name in ("latlon", "dynamic_world", *STATIC_GROUPS)]
    assert len(never) == 1 + 1 + T and not hide[:, never].any()
    G = len(enc.dynamic_groups)
    assert (hide.sum(dim=1) == round(ratio * T * G)).all()


def test_samples_with_nothing_visible_are_skipped_and_counted_never_nan():
    mae = _mae(use_latlon=False).train()
    s = make_samples(8, seed=1)
    s.mask[0] = True  # sample 0: every value missing
    s.x[s.mask] = 0
    loss, logs = mae.shared_step(Batch.from_samples(s))
    assert torch.isfinite(loss) and float(logs["skipped_samples"]) == 1
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in mae.parameters() if p.grad is not None)


def test_a_ratio_that_leaves_nothing_visible_is_refused():
    enc = PixelTimeSeriesEncoder(d=32, depth=1, heads=4)
    mae = MAE(enc, mask_ratio=0.99, decoder_dim=32, decoder_depth=1, decoder_heads=4)
    with pytest.raises(ValueError, match=r"mask ratio 0.99 hides 8 of the 8 dynamic tokens at T=1"):
        mae.shared_step(Batch.from_samples(make_samples(4, T=1)))
