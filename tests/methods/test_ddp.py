"""Two processes (gloo, CPU) with a batch of B each == one process with the batch of 2B: loss and gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

B, D_IN, D_OUT, T = 6, 10, 8, 0.2


def inputs():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2 * B, D_IN, generator=g), torch.randn(2 * B, D_IN, generator=g)
    weight = torch.randn(D_OUT, D_IN, generator=g)
    return x1, x2, weight


def losses(x1, x2, weight):
    """The gathered losses on this process's share, and the gradient of their sum w.r.t. the weight."""
    from clsp.methods.losses import clsp_contrast, nnclr_loss, nt_xent

    w = weight.clone().requires_grad_(True)
    z1, z2 = x1 @ w.T, x2 @ w.T
    simclr = nt_xent([z1, z2], T)
    nnclr = nnclr_loss(F.normalize(z1.detach(), dim=1), z2, T)   # stand-in neighbours, gathered predictions
    contrast = clsp_contrast(z1, [z2, (x1 + x2) @ w.T], None, T)  # stand-in positives: two per image
    (simclr + nnclr + contrast).backward()
    return simclr.detach(), nnclr.detach(), contrast.detach(), w.grad


def worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x1, x2, weight = inputs()
    share = slice(rank * B, (rank + 1) * B)
    simclr, nnclr, contrast, grad = losses(x1[share], x2[share], weight)
    # what DDP does: average gradients (and we average the per-rank losses the same way)
    for t in (simclr, nnclr, contrast, grad):
        dist.all_reduce(t)
        t /= world
    if rank == 0:
        torch.save({"simclr": simclr, "nnclr": nnclr, "contrast": contrast, "grad": grad}, out_file)
    dist.destroy_process_group()


def test_two_process_gather_equals_one_process(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "ddp.pt"
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    simclr, nnclr, contrast, grad = losses(*inputs())
    assert torch.allclose(got["simclr"], simclr, atol=1e-6)
    assert torch.allclose(got["nnclr"], nnclr, atol=1e-6)
    assert torch.allclose(got["contrast"], contrast, atol=1e-6)
    assert torch.allclose(got["grad"], grad, atol=1e-6)
    # and the gather really happened: one process's local losses alone differ
    local = losses(inputs()[0][:B], inputs()[1][:B], inputs()[2])
    assert not torch.allclose(local[0], simclr, atol=1e-3) and not torch.allclose(local[2], contrast, atol=1e-3)
