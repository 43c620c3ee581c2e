"""The GPU paths (bf16 autocast, channels_last, features and probes on the device); skipped without CUDA."""

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_gpu_features_match_cpu_within_bf16(encoder_file, digits16_train):
    from clsp.eval.features import Encoder

    images = digits16_train.images[:256]
    cpu = Encoder(encoder_file, "cpu").features(images, progress=False)
    gpu = Encoder(encoder_file, "cuda").features(images, progress=False)
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(cpu, gpu.cpu(), dim=1)
    assert cos.min() > 0.99  # bf16 autocast: close, not equal


def test_gpu_knn_and_linear_eval(encoder_file, tmp_path):
    from clsp.data.config import DatasetConfig
    from clsp.eval.knn import knn_eval
    from clsp.eval.linear import LinearProbeConfig, linear_eval

    data = DatasetConfig(name="digits")
    knn = knn_eval(encoder_file, data, tmp_path / "knn", device="cuda")
    linear = linear_eval(encoder_file, data, tmp_path / "linear", LinearProbeConfig(epochs=5, milestones=[3]),
                         device="cuda", progress=False)
    assert knn["results"]["best"] > 30 and linear["results"]["top1"] > 30
