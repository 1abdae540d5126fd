"""SSL losses and heads checked against the papers' formulas, computed independently with plain loops."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from cropssl.heads import DINOHead, PredictionHead, ProjectionHead
from cropssl.losses import (
    BarlowTwinsLoss,
    BYOLLoss,
    DINOLoss,
    MaskedMSELoss,
    MoCoV3Loss,
    NTXentLoss,
    VICRegLoss,
)

RNG = np.random.default_rng(0)


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(sum(float(x) ** 2 for x in v))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------- NT-Xent


def ntxent_by_hand(z0: np.ndarray, z1: np.ndarray, temp: float) -> float:
    n = len(z0)
    z = [_unit(v) for v in z0] + [_unit(v) for v in z1]
    total = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        denom = sum(math.exp(_dot(z[a], z[k]) / temp) for k in range(2 * n) if k != a)
        total += -math.log(math.exp(_dot(z[a], z[pos]) / temp) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("temp", [0.1, 0.5])
def test_ntxent_matches_hand_computation(temp):
    z0, z1 = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    got = NTXentLoss(temperature=temp)(_t(z0), _t(z1)).item()
    assert got == pytest.approx(ntxent_by_hand(z0, z1, temp), rel=1e-10)


def test_ntxent_is_symmetric_and_scale_invariant():
    z0, z1 = _t(RNG.normal(size=(5, 4))), _t(RNG.normal(size=(5, 4)))
    loss = NTXentLoss(0.2)
    assert loss(z0, z1).item() == pytest.approx(loss(z1, z0).item(), rel=1e-12)
    assert loss(3 * z0, 0.5 * z1).item() == pytest.approx(loss(z0, z1).item(), rel=1e-12)


def test_ntxent_aligned_orthogonal_views_beat_random():
    z = _t(np.eye(4))  # identical views, mutually orthogonal samples
    loss = NTXentLoss(0.1)
    aligned = loss(z, z).item()
    rand = loss(_t(RNG.normal(size=(4, 4))), _t(RNG.normal(size=(4, 4)))).item()
    # by hand: positive logit 1/T, 6 negatives at 0 -> log(e^{10} + 6) - 10
    assert aligned == pytest.approx(math.log(math.exp(10) + 6) - 10, rel=1e-9)
    assert aligned < rand


# ----------------------------------------------------------------------------------------------- MoCo v3


def test_mocov3_matches_hand_computation():
    q, k = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    temp = 0.2
    total = 0.0
    for i in range(3):
        logits = [_dot(_unit(q[i]), _unit(k[j])) / temp for j in range(3)]
        total += -logits[i] + math.log(sum(math.exp(x) for x in logits))
    expected = total / 3 * 2 * temp
    assert MoCoV3Loss(temp)(_t(q), _t(k)).item() == pytest.approx(expected, rel=1e-10)


def test_mocov3_key_gets_no_gradient():
    q, k = _t(RNG.normal(size=(3, 4)), grad=True), _t(RNG.normal(size=(3, 4)), grad=True)
    MoCoV3Loss()(q, k * 1.0).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None


# ----------------------------------------------------------------------------------------------- BYOL


def test_byol_matches_eq2_and_limits():
    p, z = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    expected = sum(2 - 2 * _dot(_unit(p[i]), _unit(z[i])) for i in range(3)) / 3
    assert BYOLLoss()(_t(p), _t(z)).item() == pytest.approx(expected, rel=1e-10)
    assert BYOLLoss()(_t(p), _t(2 * p)).item() == pytest.approx(0.0, abs=1e-12)
    assert BYOLLoss()(_t(p), _t(-p)).item() == pytest.approx(4.0, rel=1e-12)


def test_byol_target_gets_no_gradient():
    p, z = _t(RNG.normal(size=(3, 4)), grad=True), _t(RNG.normal(size=(3, 4)), grad=True)
    BYOLLoss()(p, z).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


# ----------------------------------------------------------------------------------------------- DINO


def _softmax(v: np.ndarray) -> np.ndarray:
    e = [math.exp(float(x) - float(max(v))) for x in v]
    s = sum(e)
    return np.array([x / s for x in e])


def dino_by_hand(student, teacher, center, t_temp, s_temp) -> float:
    total, n_terms = 0.0, 0
    for iq, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == iq:
                continue
            per_sample = []
            for b in range(len(t)):
                pt = _softmax((t[b] - center) / t_temp)
                ps = _softmax(s[b] / s_temp)
                per_sample.append(-sum(pt[k] * math.log(ps[k]) for k in range(len(pt))))
            total += sum(per_sample) / len(per_sample)
            n_terms += 1
    return total / n_terms


def test_dino_matches_hand_computation_and_updates_center():
    B, K = 3, 5
    student = [RNG.normal(size=(B, K)) for _ in range(4)]  # 2 global + 2 local views
    teacher = [RNG.normal(size=(B, K)) for _ in range(2)]
    center0 = RNG.normal(size=K) * 0.1
    loss = DINOLoss(K, teacher_temp=0.07, student_temp=0.1, center_momentum=0.8).double()
    loss.center.copy_(_t(center0)[None])
    got = loss([_t(s) for s in student], [_t(t) for t in teacher]).item()
    assert got == pytest.approx(dino_by_hand(student, teacher, center0, 0.07, 0.1), rel=1e-10)
    # the pairs: 2 teacher views x 3 other student views = 6 terms (v == iq skipped)
    mean_t = np.array([sum(t[b, k] for t in teacher for b in range(B)) / (2 * B) for k in range(K)])
    np.testing.assert_allclose(loss.center.numpy()[0], 0.8 * center0 + 0.2 * mean_t, rtol=1e-12)


def test_dino_center_frozen_in_eval_and_persistent():
    loss = DINOLoss(4).eval()
    loss([torch.randn(2, 4) for _ in range(2)], [torch.randn(2, 4)])
    assert torch.equal(loss.center, torch.zeros(1, 4))
    assert "center" in loss.state_dict()


def test_dino_teacher_temperature_warmup():
    B, K = 2, 4
    student = [RNG.normal(size=(B, K)) for _ in range(3)]
    teacher = [RNG.normal(size=(B, K)) for _ in range(2)]
    loss = DINOLoss(K, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_steps=7).double()
    loss.eval()  # keep the center at 0
    # np.linspace(0.04, 0.07, 7)[3] = 0.055
    assert loss.teacher_temperature(0) == pytest.approx(0.04)
    assert loss.teacher_temperature(3) == pytest.approx(0.055)
    assert loss.teacher_temperature(6) == pytest.approx(0.07)
    assert loss.teacher_temperature(100) == pytest.approx(0.07)
    got = loss([_t(s) for s in student], [_t(t) for t in teacher], step=3).item()
    assert got == pytest.approx(dino_by_hand(student, teacher, np.zeros(K), 0.055, 0.1), rel=1e-10)
    assert got != pytest.approx(dino_by_hand(student, teacher, np.zeros(K), 0.07, 0.1), rel=1e-6)


def test_dino_teacher_gets_no_gradient():
    s = [_t(RNG.normal(size=(2, 4)), grad=True) for _ in range(2)]
    t = [_t(RNG.normal(size=(2, 4)), grad=True) for _ in range(2)]
    DINOLoss(4).double()(s, t).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)
    assert all(x.grad is None for x in t)


def test_dino_errors():
    loss = DINOLoss(4)
    with pytest.raises(ValueError, match="at least 2 student views"):
        loss([torch.randn(2, 4)], [torch.randn(2, 4)])
    with pytest.raises(ValueError, match="at least 1 teacher view"):
        loss([torch.randn(2, 4)] * 2, [])
    with pytest.raises(ValueError, match="out_dim=4"):
        loss([torch.randn(2, 5)] * 2, [torch.randn(2, 5)])
    with pytest.raises(ValueError, match="share the batch"):
        loss([torch.randn(2, 4)] * 2, [torch.randn(3, 4)])


# ----------------------------------------------------------------------------------------------- Barlow


def barlow_by_hand(z0: np.ndarray, z1: np.ndarray, lam: float, eps: float = 1e-5) -> float:
    n, d = z0.shape

    def bn(z):
        out = np.zeros_like(z)
        for j in range(d):
            col = [float(x) for x in z[:, j]]
            mu = sum(col) / n
            var = sum((x - mu) ** 2 for x in col) / n
            out[:, j] = [(x - mu) / math.sqrt(var + eps) for x in col]
        return out

    a, b = bn(z0), bn(z1)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


@pytest.mark.parametrize("lam", [0.0051, 0.5])
def test_barlow_matches_hand_computation_and_is_symmetric(lam):
    z0, z1 = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    loss = BarlowTwinsLoss(lambda_=lam)
    assert loss(_t(z0), _t(z1)).item() == pytest.approx(barlow_by_hand(z0, z1, lam), rel=1e-10)
    assert loss(_t(z0), _t(z1)).item() == pytest.approx(loss(_t(z1), _t(z0)).item(), rel=1e-12)


def test_barlow_perfectly_correlated_decorrelated_views_near_zero():
    h = np.array([[1.0]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])  # 8x8 Hadamard
    z = h[:, 1:5]  # zero-mean, mutually orthogonal columns
    got = BarlowTwinsLoss(lambda_=1.0)(_t(z), _t(2 * z + 3)).item()
    assert got < 1e-9
    assert BarlowTwinsLoss(lambda_=1.0)(_t(z), _t(RNG.normal(size=(8, 4)))).item() > 0.5


# ----------------------------------------------------------------------------------------------- VICReg


def vicreg_terms_by_hand(z0: np.ndarray, z1: np.ndarray, gamma=1.0, eps=1e-4) -> tuple[float, float, float]:
    n, d = z0.shape
    inv = sum((float(z0[i, j]) - float(z1[i, j])) ** 2 for i in range(n) for j in range(d)) / (n * d)
    var_t, cov_t = 0.0, 0.0
    for z in (z0, z1):
        mu = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
        std = [
            math.sqrt(sum((float(z[i, j]) - mu[j]) ** 2 for i in range(n)) / (n - 1) + eps) for j in range(d)
        ]
        var_t += sum(max(0.0, gamma - s) for s in std) / d / 2
        for a in range(d):
            for b in range(d):
                if a != b:
                    c = sum((z[i, a] - mu[a]) * (z[i, b] - mu[b]) for i in range(n)) / (n - 1)
                    cov_t += c**2 / d
    return inv, var_t, cov_t


def test_vicreg_matches_hand_computation_and_is_symmetric():
    z0, z1 = RNG.normal(size=(3, 4)) * 0.7, RNG.normal(size=(3, 4)) * 1.5
    loss = VICRegLoss(sim=25.0, var=20.0, cov=3.0)
    inv, var_t, cov_t = vicreg_terms_by_hand(z0, z1)
    assert var_t > 0  # the hinge is active for the small-scale branch
    terms = loss.terms(_t(z0), _t(z1))
    assert terms["invariance"].item() == pytest.approx(inv, rel=1e-10)
    assert terms["variance"].item() == pytest.approx(var_t, rel=1e-10)
    assert terms["covariance"].item() == pytest.approx(cov_t, rel=1e-10)
    assert loss(_t(z0), _t(z1)).item() == pytest.approx(25 * inv + 20 * var_t + 3 * cov_t, rel=1e-10)
    assert loss(_t(z1), _t(z0)).item() == pytest.approx(loss(_t(z0), _t(z1)).item(), rel=1e-12)


def test_vicreg_gamma_sets_the_variance_target():
    z = _t(RNG.normal(size=(64, 4)) * 3.0)
    assert VICRegLoss(gamma=1.0).terms(z, z)["variance"].item() == 0.0
    assert VICRegLoss(gamma=10.0).terms(z, z)["variance"].item() > 5.0


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "loss", [NTXentLoss(), MoCoV3Loss(), BYOLLoss(), BarlowTwinsLoss(), VICRegLoss()], ids=type
)
def test_pair_losses_reject_mismatched_shapes(loss):
    with pytest.raises(ValueError, match=r"same shape, got \(3, 4\) and \(3, 5\)"):
        loss(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="2-D"):
        loss(torch.randn(3), torch.randn(3))


@pytest.mark.parametrize(
    "loss", [NTXentLoss(), MoCoV3Loss(), BYOLLoss(), BarlowTwinsLoss(), VICRegLoss()], ids=type
)
def test_pair_losses_compute_in_fp32_under_mixed_precision(loss):
    """bfloat16 embeddings under autocast (``bf16-mixed``): the loss is the float64 loss of the same values
    to fp32 precision, not one whose products ran in bfloat16 (which misses it by ~1e-3 relative)."""
    gen = torch.Generator().manual_seed(0)
    z0, z1 = (torch.randn(256, 512, generator=gen).to(torch.bfloat16) for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(z0.requires_grad_(), z1.requires_grad_())
    got.backward()
    expected = float(loss(z0.double(), z1.double()))
    assert got.dtype == torch.float32 and z0.grad.dtype == torch.bfloat16
    assert float(got) == pytest.approx(expected, rel=2e-6, abs=1e-6)


def test_dino_loss_computes_in_fp32_under_mixed_precision():
    gen = torch.Generator().manual_seed(0)
    student = [torch.randn(64, 4096, generator=gen).to(torch.bfloat16) for _ in range(4)]
    teacher = student[:2]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = DINOLoss(out_dim=4096).eval()(student, teacher)
    expected = (
        DINOLoss(out_dim=4096).double().eval()([s.double() for s in student], [t.double() for t in teacher])
    )
    assert got.dtype == torch.float32 and float(got) == pytest.approx(float(expected), rel=2e-6)


def test_batch_statistics_need_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        BarlowTwinsLoss()(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        VICRegLoss()(torch.randn(1, 4), torch.randn(1, 4))


def test_masked_mse_still_exported():
    assert MaskedMSELoss()(torch.ones(2), torch.zeros(2), torch.ones(2, dtype=torch.bool)).item() == 1.0


# ----------------------------------------------------------------------------------------------- heads


def test_projection_and_prediction_head_shapes():
    x = torch.randn(5, 8)
    assert ProjectionHead(8, 16, 6)(x).shape == (5, 6)
    assert ProjectionHead(8, 16, 6, num_layers=1)(x).shape == (5, 6)
    head = ProjectionHead(8, 16, 6, num_layers=3, last_bn=True)
    out = head(x)
    assert out.shape == (5, 6)
    # affine-free BatchNorm at the end (train mode): every output dim is standardised over the batch
    torch.testing.assert_close(out.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 3
    assert PredictionHead(6, 16, 6)(out).shape == (5, 6)
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(8, 16, 6, num_layers=0)


def test_dino_head_last_layer_is_unit_norm_cosine():
    torch.manual_seed(0)
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4, num_layers=3)
    x = torch.randn(5, 8)
    # independent recomputation: MLP, L2-normalise, then rows of v divided by their norms (g = 1)
    h = x
    for m in head.mlp:
        h = m(h)
    h = h / h.norm(dim=1, keepdim=True)
    v = head.last_layer.parametrizations.weight.original1
    expected = h @ (v / v.norm(dim=1, keepdim=True)).T
    out = head(x)
    torch.testing.assert_close(out, expected)
    assert out.shape == (5, 10) and out.abs().max() <= 1 + 1e-6
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    assert DINOHead(
        8, 10, 16, 4, norm_last_layer=False
    ).last_layer.parametrizations.weight.original0.requires_grad
    assert DINOHead(8, 10, 16, 4, num_layers=1)(x).shape == (5, 10)


def test_dino_head_batchnorm_option_standardises_the_hidden_layers():
    torch.manual_seed(0)
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4, num_layers=3, use_bn=True).train()
    bns = [m for m in head.mlp if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 2  # after each hidden Linear, none after the bottleneck Linear
    # inputs sharing a large common component come out of the first hidden layer batch-standardised:
    # (z - mean_batch(z)) / sqrt(var_batch(z) + eps), the BatchNorm formula (gamma = 1, beta = 0 at init)
    x = 100 + torch.randn(32, 8)
    z = head.mlp[0](x)
    expected = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + bns[0].eps)
    torch.testing.assert_close(head.mlp[1](z), expected, atol=1e-4, rtol=1e-4)
    assert head(x).shape == (32, 10)


def test_dino_head_training_keeps_prototypes_unit_norm():
    torch.manual_seed(0)
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    head(torch.randn(5, 8)).pow(2).sum().backward()
    opt.step()
    w = head.last_layer.weight
    torch.testing.assert_close(w.norm(dim=1), torch.ones(10))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ProjectionHead(8, 16, 6, num_layers=3, last_bn=True),
        lambda: PredictionHead(8, 16, 6),
        lambda: DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4),
    ],
    ids=["projection", "prediction", "dino"],
)
def test_heads_state_dict_round_trip_and_deepcopy(make):
    torch.manual_seed(1)
    a = make()
    a(torch.randn(4, 8))  # move BatchNorm running stats away from their init
    torch.manual_seed(2)
    b = make()
    x = torch.randn(4, 8)
    a.eval()
    b.eval()
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
    c = copy.deepcopy(a)
    torch.testing.assert_close(c(x), a(x), rtol=0, atol=0)
    # the copy is independent of the original
    with torch.no_grad():
        for p in c.parameters():
            p.add_(1.0)
    assert not torch.allclose(c(x), a(x))
    if isinstance(a, DINOHead):
        assert not c.last_layer.parametrizations.weight.original0.requires_grad
