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
