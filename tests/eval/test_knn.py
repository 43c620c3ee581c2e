import math

import pytest
import torch

from clsp.knn import best_k, knn_accuracy


def unit(angle_deg):
    a = math.radians(angle_deg)
    return [math.cos(a), math.sin(a)]


def test_known_answers_on_two_clusters():
    # class 0 around 0 degrees, class 1 around 90 degrees; norms vary (cosine ignores them)
    train = torch.tensor([unit(-5), unit(0), unit(5), unit(85), unit(90), unit(95)]) * torch.tensor([[1.0], [3], [0.5], [2], [1], [4]])
    train_y = torch.tensor([0, 0, 0, 1, 1, 1])
    test = torch.tensor([unit(10), unit(80), unit(40), unit(50)])
    test_y = torch.tensor([0, 1, 1, 1])  # 40 degrees is truly class 0 -> one error at every k
    acc = knn_accuracy(train, train_y, test, test_y, ks=(1, 3))
    assert acc == {1: 75.0, 3: 75.0}


def test_weighting_overrules_the_majority():
    # one very close class-0 neighbour against two orthogonal class-1 neighbours:
    # majority vote (k=3) says 1; exp(1/0.07) >> 2 * exp(0/0.07) says 0.
    train = torch.tensor([unit(0), unit(90), unit(-90), unit(180)])
    train_y = torch.tensor([0, 1, 1, 2])
    test, test_y = torch.tensor([unit(1)]), torch.tensor([0])
    assert knn_accuracy(train, train_y, test, test_y, ks=(3,))[3] == 100.0
    # with a very high temperature the weights are almost equal and the majority wins
    assert knn_accuracy(train, train_y, test, test_y, ks=(3,), temperature=1000.0)[3] == 0.0


def test_k_larger_than_train_set_and_batching():
    torch.manual_seed(0)
    train, train_y = torch.randn(50, 8), torch.randint(0, 3, (50,))
    test, test_y = torch.randn(37, 8), torch.randint(0, 3, (37,))
    one = knn_accuracy(train, train_y, test, test_y, ks=(5, 200), batch_size=1000)
    many = knn_accuracy(train, train_y, test, test_y, ks=(5, 200), batch_size=4)
    assert one == many
    assert set(one) == {5, 200}


def test_matches_a_direct_loop():
    torch.manual_seed(1)
    train, train_y = torch.randn(60, 5), torch.randint(0, 4, (60,))
    test, test_y = torch.randn(25, 5), torch.randint(0, 4, (25,))
    k, T = 7, 0.5
    correct = 0
    for q, y in zip(test, test_y):
        sims = torch.nn.functional.cosine_similarity(q[None], train)
        order = sims.argsort(descending=True)[:k]
        votes = torch.zeros(4)
        for i in order:
            votes[train_y[i]] += math.exp(sims[i] / T)
        correct += int(votes.argmax() == y)
    assert knn_accuracy(train, train_y, test, test_y, ks=(k,), temperature=T)[k] == pytest.approx(100.0 * correct / 25)


def test_best_k_prefers_smallest_on_ties():
    assert best_k({5: 90.0, 10: 91.0, 20: 91.0}) == (10, 91.0)


def test_a_size_other_than_the_encoders_is_said(encoder_file, caplog):
    """--size 8 on a 16 px encoder: a warning names both sizes and the flag; the encoder's own size is silent."""
    import logging

    from clsp.data.config import DatasetConfig
    from clsp.eval.features import Encoder

    encoder = Encoder(encoder_file, "cpu")
    with caplog.at_level(logging.WARNING, logger="clsp"):
        assert encoder.dataset_config(DatasetConfig(name="digits")).size == 16
        assert encoder.dataset_config(DatasetConfig(name="digits", size=16)).size == 16
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="clsp"):
        assert encoder.dataset_config(DatasetConfig(name="digits", size=8)).size == 8
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "trained at 16 px" in said and "loaded at 8 px" in said and "--size" in said
