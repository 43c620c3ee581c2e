"""The compiled step (torch.compile of loss_from_views) computes what the eager step computes, and is
the default on one CUDA device only.

Two checks per method (SimCLR and MoCo, with the CLSP term and the probe):
  - the capture, on the real ResNet-10: dynamo + AOTAutograd without code generation ("aot_eager"):
    the same graph, side effects (BatchNorm statistics, queues read in place) and gradients;
  - the generated code (inductor, the default backend) on a one-layer conv backbone: on this shared
    2-core CPU inductor's C++ compilation of a whole ResNet-10 forward and backward takes 4-8 minutes
    a method, of the small one 30-60 s. Inductor fuses and reorders float32 reductions, so the two
    agree to rounding, not bit for bit: losses to rtol 1e-5, gradients and keys to rtol 1e-3 / atol 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from methods_helpers import tiny_config
from torch import nn

from clsp.methods import method_class
from clsp.methods.base import compile_step, frozen_copy
from clsp.methods.data import ViewMaker
from clsp.training import ResidentBatches, TrainerConfig

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

LOSS_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
GRAD_TOLERANCE = dict(rtol=1e-3, atol=1e-5)


def method_module(tmp_path, method: str, small_backbone: bool):
    cfg = tiny_config(tmp_path, f"method={method}", "clsp.weight=1.0", "clsp.third_view=augment", "batch_size=8",
                      "projector.hidden_dim=32", "projector.out_dim=16")
    data = ResidentBatches(torch.zeros(16, 8, 8, 3, dtype=torch.uint8), None, 8, 0)
    torch.manual_seed(0)
    module = method_class(method)(cfg, data, ViewMaker(nn.Identity(), "augment"), steps_per_epoch=2, num_classes=10)
    if small_backbone:
        module.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, module.feat_dim))
        if method == "moco":
            module.key_backbone = frozen_copy(module.backbone)
    module.before_step(0)
    return module


def loss_and_gradients(module, step_fn, views, labels):
    module.zero_grad(set_to_none=True)
    loss, logs, entries = step_fn(views, labels)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return loss.detach(), {k: v.detach() for k, v in logs.items()}, grads, entries


def assert_same_step(module, backend: str, loss_tol: dict, grad_tol: dict) -> None:
    torch.manual_seed(1)
    views = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    labels = torch.arange(8) % 10
    eager = loss_and_gradients(module, module.loss_from_views, views, labels)
    compiled = loss_and_gradients(module, torch.compile(module.loss_from_views, backend=backend), views, labels)
    torch.testing.assert_close(compiled[0], eager[0], **loss_tol)
    assert set(compiled[1]) == set(eager[1]) >= {"train/loss_ssl", "train/loss_clsp", "train/probe_counts"}
    for key in eager[1]:
        torch.testing.assert_close(compiled[1][key], eager[1][key], **loss_tol, msg=key)
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert set(compiled[2]) == set(eager[2]) == trainable                 # every trainable parameter got one
    for name in eager[2]:
        torch.testing.assert_close(compiled[2][name], eager[2][name], **grad_tol, msg=name)
    if eager[3] is not None:                                              # MoCo's keys, to enqueue after the step
        torch.testing.assert_close(compiled[3], eager[3], **grad_tol)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_the_compiled_graph_is_the_eager_step(tmp_path, method):
    assert_same_step(method_module(tmp_path, method, small_backbone=False), "aot_eager",
                     dict(rtol=1e-6, atol=1e-7), dict(rtol=1e-5, atol=1e-7))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_the_generated_code_gives_the_eager_loss_and_gradients(tmp_path, method):
    assert_same_step(method_module(tmp_path, method, small_backbone=True), "inductor", LOSS_TOLERANCE, GRAD_TOLERANCE)


def test_the_step_is_compiled_by_default_on_one_cuda_device_only():
    auto, on, off = TrainerConfig(), TrainerConfig(compile=True), TrainerConfig(compile=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert compile_step(auto, cuda, 1) and not compile_step(auto, cpu, 1) and not compile_step(auto, cuda, 2)
    assert compile_step(on, cpu, 1) and not compile_step(off, cuda, 1)
