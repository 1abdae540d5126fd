import pytest
import torch

from cropssl.masking import STRATEGIES, MaskGenerator


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("T", [12, 36])
def test_each_strategy_hits_the_ratio_exactly(strategy, T):
    G = 8
    gen = MaskGenerator(0.75, [strategy])
    mask, choice = gen(64, T, G, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (64, T, G) and (choice == 0).all()
    assert (mask.reshape(64, -1).sum(1) == round(0.75 * T * G)).all()


def test_structures_are_present():
    T, G = 12, 8
    g = torch.Generator().manual_seed(1)
    m, _ = MaskGenerator(0.75, ["channel_groups"])(32, T, G, generator=g)
    assert ((m.all(dim=1)).sum(1) >= 6).all()  # >= floor(0.75 * 8) whole groups
    m, _ = MaskGenerator(0.75, ["random_timesteps"])(32, T, G, generator=g)
    assert ((m.all(dim=2)).sum(1) >= 9).all()  # >= floor(0.75 * 12) whole timesteps
    m, _ = MaskGenerator(0.75, ["contiguous_timesteps"])(32, T, G, generator=g)
    full = m.all(dim=2)
    for row in full:
        idx = torch.nonzero(row).flatten()
        # a run of 9 consecutive fully-masked timesteps exists
        runs = [(idx[i : i + 9] == torch.arange(idx[i], idx[i] + 9)).all() for i in range(len(idx) - 8)]
        assert any(runs)


def test_random_is_uniform_over_positions():
    m, _ = MaskGenerator(0.5, ["random"])(4000, 4, 4, generator=torch.Generator().manual_seed(2))
    freq = m.float().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 0.5), atol=0.04)


def test_one_strategy_per_sample_drawn_uniformly():
    _, choice = MaskGenerator()(4000, 12, 8, generator=torch.Generator().manual_seed(3))
    counts = torch.bincount(choice, minlength=4).float() / 4000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.04)


def test_bad_arguments():
    with pytest.raises(ValueError, match="ratio"):
        MaskGenerator(1.0)
    with pytest.raises(ValueError, match="unknown masking strategies"):
        MaskGenerator(0.5, ["randm"])
