"""Gathered losses on 2 gloo CPU processes == one process on the concatenated global batch.

Each process holds half of a fixed global batch and the same tiny linear "encoder" ``W``; it computes
the loss with ``gather_distributed=True`` and backpropagates, then the gradients are averaged over the
ranks as DDP does. The result must equal the gradient of one process computing the same loss on the
whole batch with ``gather_distributed=False``.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cropssl.losses import BarlowTwinsLoss, DINOLoss, MoCoV3Loss, NTXentLoss, VICRegLoss
from cropssl.losses import dist as ldist

WORLD = 2
N_LOCAL, D_IN, D_OUT = 4, 5, 6


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoder init and a fixed global batch of 3 views (identical in every process)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D_IN, D_OUT, generator=g, dtype=torch.float64)
    W_teacher = torch.randn(D_IN, D_OUT, generator=g, dtype=torch.float64)
    X = torch.randn(3, WORLD * N_LOCAL, D_IN, generator=g, dtype=torch.float64)
    return W, W_teacher, X


def _losses(gather: bool) -> dict[str, torch.nn.Module]:
    return {
        "ntxent": NTXentLoss(0.3, gather_distributed=gather),
        "mocov3": MoCoV3Loss(0.3, gather_distributed=gather),
        "barlow": BarlowTwinsLoss(0.2, gather_distributed=gather),
        "vicreg": VICRegLoss(gather_distributed=gather),
        "dino": DINOLoss(D_OUT, center_momentum=0.5, gather_distributed=gather).double(),
    }


def _step(
    name: str, loss: torch.nn.Module, W: torch.Tensor, W_t: torch.Tensor, X: torch.Tensor
) -> torch.Tensor:
    """The loss as the methods use it (MoCo v3 symmetrised; DINO 2 global + 1 local view)."""
    z = [x @ W for x in X]
    if name == "mocov3":
        k = [x @ W_t for x in X]
        return loss(z[0], k[1]) + loss(z[1], k[0])
    if name == "dino":
        return loss(z, [x @ W_t for x in X[:2]])
    return loss(z[0], z[1])


def _naive_gather(x: torch.Tensor) -> torch.Tensor:
    """All-gather whose gradient only reaches the local slice (what lightly #1977 amounted to)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        assert ldist.world_size() == WORLD and ldist.rank() == rank
        W0, W_t, X = _data()
        X_local = X[:, rank * N_LOCAL : (rank + 1) * N_LOCAL]
        results = {}
        for name, loss in _losses(gather=True).items():
            W = W0.clone().requires_grad_(True)
            value = _step(name, loss, W, W_t, X_local)
            value.backward()
            dist.all_reduce(W.grad)  # DDP: average the gradients over the ranks
            results[name] = {"loss": value.detach(), "grad": W.grad / WORLD}
            if name == "dino":
                results[name]["center"] = loss.center.clone()
        # naive gather: Barlow Twins on the global batch, gradient to the local slice only
        W = W0.clone().requires_grad_(True)
        z0, z1 = _naive_gather(X_local[0] @ W), _naive_gather(X_local[1] @ W)
        BarlowTwinsLoss(0.2)(z0, z1).backward()
        dist.all_reduce(W.grad)
        results["barlow_naive"] = {"grad": W.grad / WORLD}
        # gather is identity-like on the values and ordered by rank
        torch.testing.assert_close(ldist.gather(X_local[0]), X[0], rtol=0, atol=0)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def _reference(name: str) -> dict[str, torch.Tensor]:
    W0, W_t, X = _data()
    loss = _losses(gather=False)[name]
    W = W0.clone().requires_grad_(True)
    value = _step(name, loss, W, W_t, X)
    value.backward()
    ref = {"loss": value.detach(), "grad": W.grad}
    if name == "dino":
        ref["center"] = loss.center.clone()
    return ref


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["ntxent", "mocov3", "barlow", "vicreg", "dino"])
def test_gathered_gradient_equals_single_process(rank_results, name):
    ref = _reference(name)
    grads = [r[name]["grad"] for r in rank_results]
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)  # DDP keeps replicas in sync
    assert ref["grad"].abs().max() > 1e-3  # the comparison is not vacuous
    torch.testing.assert_close(grads[0], ref["grad"], rtol=0, atol=1e-6)
    # per-rank losses average over the local anchors/samples: their mean is the global loss
    mean_loss = sum(r[name]["loss"] for r in rank_results) / WORLD
    torch.testing.assert_close(mean_loss, ref["loss"], rtol=0, atol=1e-6)
    if name == "barlow":  # computed entirely on the global batch: identical in every rank
        for r in rank_results:
            torch.testing.assert_close(r[name]["loss"], ref["loss"], rtol=0, atol=1e-6)
    if name == "dino":  # center = mean of the teacher outputs over the global batch
        for r in rank_results:
            torch.testing.assert_close(r[name]["center"], ref["center"], rtol=0, atol=1e-12)


@pytest.mark.timeout(120)
def test_naive_gather_gradient_is_world_size_times_too_small(rank_results):
    ref = _reference("barlow")
    naive = rank_results[0]["barlow_naive"]["grad"]
    assert (naive - ref["grad"]).abs().max() > 1e-3
    torch.testing.assert_close(naive * WORLD, ref["grad"], rtol=0, atol=1e-6)
