"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, arXiv 1708.03888), as SimCLR uses it.

Neither torch nor Lightning ships it. For each parameter w with gradient g and weight decay wd,
    local_lr = eta * |w| / (|g| + wd |w|)      (1 when either norm is 0)
    v <- momentum * v + (g + wd w) * local_lr ;  w <- w - lr * v
Groups with `lars_exclude=True` (biases and batch-norm parameters, the probe) take plain SGD steps.
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for w in group["params"]:
                if w.grad is None:
                    continue
                g = w.grad.add(w, alpha=group["weight_decay"]) if group["weight_decay"] else w.grad.clone()
                if not group["lars_exclude"]:
                    w_norm, g_norm = w.norm(), w.grad.norm()
                    trust = group["eta"] * w_norm / (g_norm + group["weight_decay"] * w_norm)
                    g.mul_(torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust)))
                state = self.state[w]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w)
                v = state["momentum_buffer"].mul_(group["momentum"]).add_(g)
                w.add_(v, alpha=-group["lr"])
        return loss
