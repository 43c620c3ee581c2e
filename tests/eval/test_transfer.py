import pytest

from clsp.errors import UserError
from clsp.eval.linear import LinearProbeConfig
from clsp.eval.metrics import read_metrics
from clsp.eval.transfer import transfer_eval

from transfer_data import write_dtd, write_pets

PROBE = LinearProbeConfig(epochs=30, batch_size=8, lr=0.5, milestones=[20])


@pytest.fixture()
def transfer_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CLSP_DATA_ROOT", str(tmp_path / "cache"))  # the loaders' fingerprint cache stays in tmp
    root = tmp_path / "data"
    return root, write_pets(root), write_dtd(root)


def test_transfer_on_torchvision_layouts(encoder_file, transfer_root, tmp_path):
    root, pets, dtd = transfer_root
    metrics = transfer_eval(encoder_file, ["pets", "dtd"], tmp_path / "transfer", root=str(root), probe_cfg=PROBE,
                            device="cpu", progress=False)
    assert metrics == read_metrics(tmp_path / "transfer") and metrics["kind"] == "transfer"
    rows = {r["dataset"]: r for r in metrics["results"]["sets"]}
    assert rows["pets"]["n_train"] == pets["trainval"] and rows["pets"]["n_test"] == pets["test"]
    assert rows["dtd"]["n_train"] == dtd["train"] + dtd["val"] and rows["dtd"]["n_test"] == dtd["test"]
    assert rows["dtd"]["num_classes"] == 3 and metrics["results"]["image_size"] == 16  # the encoder's resolution
    for row in rows.values():
        assert row["status"] == "ok" and row["top1"] >= 80.0  # one colour per class: separable
    assert read_metrics(tmp_path / "transfer" / "pets")["kind"] == "linear"  # each set is its own resumable run


def test_missing_set_is_named_or_skipped(encoder_file, transfer_root, tmp_path):
    root, _, _ = transfer_root
    with pytest.raises(UserError, match="flowers102"):
        transfer_eval(encoder_file, ["pets", "flowers102"], tmp_path / "t1", root=str(root), probe_cfg=PROBE, device="cpu")
    assert not (tmp_path / "t1").exists()  # checked before any work
    metrics = transfer_eval(encoder_file, ["flowers102", "dtd"], tmp_path / "t2", root=str(root), probe_cfg=PROBE,
                            skip_missing=True, device="cpu", progress=False)
    rows = metrics["results"]["sets"]
    assert [r["dataset"] for r in rows] == ["flowers102", "dtd"]
    assert rows[0]["status"] == "missing" and "flowers102" in rows[0]["reason"]
    assert rows[1]["status"] == "ok"


def test_skip_missing_skips_without_trying_a_download(transfer_root, monkeypatch):
    import clsp.data.cifar
    from clsp.eval.transfer import load_sets

    def no_download(name):
        raise AssertionError(f"{name}: a download was tried before skipping")

    monkeypatch.setattr(clsp.data.cifar, "_download", no_download)
    present, missing = load_sets(["cifar10"], None, 16, skip_missing=True)  # the cache (CLSP_DATA_ROOT) is empty
    assert present == {} and "cifar10 not found" in missing["cifar10"]
