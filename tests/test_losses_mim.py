import pytest
import torch

from cropssl.losses.mim import MaskedMSELoss


def test_masked_mse_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    target = torch.tensor([[0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, True]])
    assert MaskedMSELoss()(pred, target, mask).item() == pytest.approx((1 + 9) / 2)


def test_masked_mse_empty_mask_is_zero_with_grad():
    pred = torch.ones(2, 3, requires_grad=True)
    loss = MaskedMSELoss()(pred, torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0 and pred.grad is not None


def test_masked_mse_shape_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        MaskedMSELoss()(torch.ones(2, 3), torch.ones(3, 2), torch.ones(2, 3, dtype=torch.bool))


def test_band_norm_weights_every_band_by_the_inverse_variance_of_its_targets():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(6, 5, 3, generator=g) * torch.tensor(
        [0.05, 1.0, 20.0]
    )  # bands of very different spread
    pred = target + torch.randn(6, 5, 3, generator=g) * torch.tensor([0.05, 1.0, 20.0])
    mask = torch.rand(6, 5, 3, generator=g) < 0.6
    total, n = 0.0, 0
    for b in range(3):
        sel = mask[..., b]
        t = target[..., b][sel]
        var = float(((t - t.mean()) ** 2).mean())
        total += float(((pred[..., b][sel] - t) ** 2).sum()) / var
        n += int(sel.sum())
    assert MaskedMSELoss(band_norm=True)(pred, target, mask).item() == pytest.approx(total / n, rel=1e-5)
    # predicting each band's mean scores 1 whatever the band's scale
    means = torch.stack([target[..., b][mask[..., b]].mean() for b in range(3)])
    assert MaskedMSELoss(band_norm=True)(means.expand_as(target), target, mask).item() == pytest.approx(
        1.0, rel=1e-5
    )
