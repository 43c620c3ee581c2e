"""Run records: what a stage was made from, and whether a finished run matches the work asked now."""

import json
from dataclasses import dataclass

from clsp import rundir
from clsp.io import atomic_path, hash_directory, write_json_atomic


@dataclass
class Cfg:
    steps: int = 3


def test_start_writes_records_and_finish_marks_exact_work(tmp_path):
    run = tmp_path / "run"
    rundir.start(run, Cfg(), {"dataset": "abc"})
    for name in ("config.yaml", "env.json", "inputs.json", "log.txt"):
        assert (run / name).is_file(), name
    env = json.loads((run / "env.json").read_text())
    assert "torch" in env["versions"] and "argv" in env
    assert not rundir.is_complete(run, Cfg(), {"dataset": "abc"})
    rundir.finish(run, Cfg(), {"dataset": "abc"}, {"model": "m"})
    assert rundir.is_complete(run, Cfg(), {"dataset": "abc"})
    assert rundir.outputs(run) == {"model": "m"}
    # a different config or a different input invalidates it
    assert not rundir.is_complete(run, Cfg(steps=4), {"dataset": "abc"})
    assert not rundir.is_complete(run, Cfg(), {"dataset": "abd"})


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}


def test_hash_directory_sees_content_changes(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"\x00\x01")
    h1 = hash_directory(tmp_path)
    assert hash_directory(tmp_path) == h1
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"\x00\x02")
    h2 = hash_directory(tmp_path)
    assert h2 != h1
    (tmp_path / "record.json").write_text('{"quality": 1}')       # how a shipped model was made: not the model
    assert hash_directory(tmp_path) == h2
    (tmp_path / "scheduler_config.json").write_text("{}")
    assert hash_directory(tmp_path) != h2


def test_file_and_directory_hashes_are_sha256_of_the_bytes(tmp_path):
    """One hashing of files for the model directory, the encoder record and the store's chunks: checked by hand."""
    import hashlib

    from clsp.io import file_sha256

    data = bytes(range(256)) * 20000                                    # 5 MB: more than one read block
    (tmp_path / "w.safetensors").write_bytes(data)
    (tmp_path / "config.json").write_text("{}")
    assert file_sha256(tmp_path / "w.safetensors") == hashlib.sha256(data).hexdigest()
    by_hand = hashlib.sha256(b"config.json{}w.safetensors" + data).hexdigest()[:16]   # names, then bytes, sorted
    assert hash_directory(tmp_path) == by_hand


def test_finish_stops_logging_into_the_run(tmp_path):
    import logging

    def file_handlers():
        return [h for h in logging.getLogger("clsp").handlers if isinstance(h, logging.FileHandler)]

    before = len(file_handlers())
    for i in range(3):
        rundir.start(tmp_path / f"r{i}", Cfg())
        rundir.finish(tmp_path / f"r{i}", Cfg())
    assert len(file_handlers()) == before


def test_an_atomic_write_gets_the_mode_a_plain_write_would(tmp_path):
    import os

    (tmp_path / "plain.json").write_text("{}")
    write_json_atomic(tmp_path / "atomic.json", {})
    mode = lambda p: os.stat(p).st_mode & 0o777          # noqa: E731
    assert mode(tmp_path / "atomic.json") == mode(tmp_path / "plain.json")       # not mkstemp's 0600


def test_a_stage_is_complete_for_its_fingerprint_with_its_outputs_and_reads_back_its_records(tmp_path):
    """rundir.Stage reads the records start / finish write (a run made before Stage existed is complete for it);
    a missing output, another config or other inputs make it incomplete."""
    run = tmp_path / "run"
    rundir.start(run, Cfg(), {"dataset": "abc"})
    (run / "model").mkdir()
    stage = rundir.Stage(run, Cfg(), {"dataset": "abc"}, outputs=["model"])
    assert not stage.complete
    assert stage.recorded_config() == {"steps": 3} and stage.recorded_inputs() == {"dataset": "abc"}
    rundir.finish(run, Cfg(), {"dataset": "abc"}, {"model": "m"})
    assert stage.complete
    assert not rundir.Stage(run, Cfg(steps=4), {"dataset": "abc"}).complete
    assert not rundir.Stage(run, Cfg(), {"dataset": "abd"}).complete
    assert not rundir.Stage(run, Cfg(), {"dataset": "abc"}, outputs=["model", "samples"]).complete
    (run / "model").rmdir()
    assert not stage.complete


def test_a_stage_writes_what_start_and_finish_write(tmp_path):
    stage = rundir.Stage(tmp_path / "run", Cfg(), {"dataset": "abc"})
    stage.start()
    stage.done({"model": "m"})
    done = json.loads((tmp_path / "run" / "done.json").read_text())
    assert set(done) == {"fingerprint", "outputs", "finished_at"} and done["outputs"] == {"model": "m"}
    assert done["fingerprint"] == rundir.fingerprint({"steps": 3}, {"dataset": "abc"})
    assert (tmp_path / "run" / "config.yaml").read_text() == "steps: 3\n"
    assert rundir.is_complete(tmp_path / "run", Cfg(), {"dataset": "abc"})


def test_a_damaged_record_is_not_complete(tmp_path):
    for damage in ("{", "[1, 2]", '"text"'):
        (tmp_path / "done.json").write_text(damage)
        assert not rundir.is_complete(tmp_path, Cfg())


def test_keys_added_later_at_their_neutral_value_and_keys_that_change_nothing_keep_old_fingerprints():
    """A run finished before `batch_follows_data`, `trainer.logger` and `clsp.form` (or `dataset.channels` and
    `projector.output_batchnorm`) existed stays complete after the upgrade: its recorded fingerprint (the config
    without those keys) is what the new code computes at their defaults. (The second CPU study's records, made
    before four of these keys, are found complete but for the synthesis, whose model path was another checkout's.)"""
    from clsp.config import load_config, to_dict
    from clsp.io import hash_json
    from clsp.methods.config import PretrainConfig

    cfg = load_config(PretrainConfig, None, ["dataset.name=digits"])
    before_the_keys = to_dict(cfg)
    del before_the_keys["batch_follows_data"], before_the_keys["trainer"]["logger"], before_the_keys["clsp"]["form"]
    del before_the_keys["dataset"]["channels"], before_the_keys["projector"]["output_batchnorm"]  # the previous one's
    inputs = {"dataset": "abc"}
    assert rundir.fingerprint(cfg, inputs) == hash_json({"config": before_the_keys, "inputs": inputs})
    logged_elsewhere = load_config(PretrainConfig, None, ["dataset.name=digits", "trainer.logger=csv"])
    assert rundir.fingerprint(logged_elsewhere, inputs) == rundir.fingerprint(cfg, inputs)
    fitted = load_config(PretrainConfig, None, ["dataset.name=digits", "batch_follows_data=true"])
    assert rundir.fingerprint(fitted, inputs) != rundir.fingerprint(cfg, inputs)     # a used key is part of the work
    contrast = load_config(PretrainConfig, None, ["dataset.name=digits", "clsp.form=contrast"])
    assert rundir.fingerprint(contrast, inputs) != rundir.fingerprint(cfg, inputs)
    assert to_dict(cfg)["batch_follows_data"] is False and to_dict(cfg)["trainer"]["logger"] == "tensorboard"  # recorded
