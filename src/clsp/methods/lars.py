"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, arXiv 1708.03888), as solo-learn
runs it for its NNCLR and All4One recipes (clip_lr=True, eta=0.02, exclude_bias_n_norm=True).

For each adapted parameter w with gradient g, weight decay wd and the group's current lr:

    r = eta * |w| / (|g| + wd |w| + eps)           the trust ratio (when |w| > 0 and |g| > 0)
    r = min(r / lr, 1)                              clip_lr: the step lr * r never exceeds eta * trust
    d = r * (g + wd w)                              (d = g when |w| or |g| is 0: no scaling, no decay)
    v <- momentum * v + d ;  w <- w - lr * v

Not adapted, with plain SGD steps d = g and no weight decay: 1-d parameters (biases, norm weights)
when exclude_bias_n_norm, and whole groups marked `lars_exclude=True` (the online probe).

Neither torch nor Lightning ships LARS. Kept rather than timm.optim.Lars (timm 1.0, multi-tensor too): timm is
an optional extra while the NNCLR, All4One, BYOL and ImageNet-100 presets run LARS, and timm's differs from
solo-learn's where these tested numbers rest: it adds wd * w to a parameter whose gradient is zero (solo-learn
leaves it, see tests/methods/test_schedules.py) and adapts a group only when its weight decay is non-zero.
This one updates each group with torch._foreach_* kernels: two norm kernels for all tensors and a handful of
elementwise ones per group, instead of about ten kernels per parameter (1,600 launches a step on ResNet-50).
"""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):  # kept by hand: solo-learn's exact update, timm optional (above)
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02,
                 eps: float = 1e-8, clip_lr: bool = True, exclude_bias_n_norm: bool = True) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"LARS needs lr, momentum and weight_decay >= 0, got {lr}, {momentum}, {weight_decay}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, eps=eps,
                                      clip_lr=clip_lr, exclude_bias_n_norm=exclude_bias_n_norm, lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            adapted = [not group["lars_exclude"] and not (group["exclude_bias_n_norm"] and p.ndim == 1) for p in params]
            update = self._scaled_grads(params, grads, adapted, group)
            if group["momentum"]:
                velocity = [self._momentum_buffer(p) for p in params]
                torch._foreach_mul_(velocity, group["momentum"])
                torch._foreach_add_(velocity, update)
                update = velocity
            torch._foreach_add_(params, update, alpha=-group["lr"])
        return loss

    def _scaled_grads(self, params, grads, adapted: list[bool], group: dict) -> list[torch.Tensor]:
        """d = r (g + wd w) for the adapted parameters (all at once), d = g for the others."""
        if not any(adapted):
            return grads
        w_norm = torch.stack(torch._foreach_norm(params))
        g_norm = torch.stack(torch._foreach_norm(grads))
        wd = group["weight_decay"]
        ratio = group["eta"] * w_norm / (g_norm + wd * w_norm + group["eps"])
        if group["clip_lr"]:
            ratio = (ratio / group["lr"]).clamp(max=1.0)
        scale = (w_norm > 0) & (g_norm > 0) & torch.tensor(adapted, device=w_norm.device)
        ratio = torch.where(scale, ratio, torch.ones_like(ratio))
        decay = torch.where(scale, ratio * wd, torch.zeros_like(ratio))
        steps = torch._foreach_mul(grads, list(ratio.unbind()))
        if wd:
            torch._foreach_add_(steps, torch._foreach_mul(params, list(decay.unbind())))
        return steps

    def _momentum_buffer(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["momentum_buffer"]
