"""Nothing on disk is lost or half-written: full disks, locks, corrupt or foreign state, mismatched resumes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from activelab.cli import main
from activelab.data.state import LabelState
from activelab.errors import StateError
from activelab.io import atomic_write_bytes
from activelab.runlock import RunLock

SMALL = ["run", "--pool-size", "300", "--n-test", "100", "--n-val", "50", "--n-train-images", "20",
         "--al-samples-per-iter", "10", "--al-iter", "1", "--max-epochs", "1", "--min-steps", "0", "--quiet", "--run-name", "r"]


def test_a_full_disk_during_a_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    LabelState.create(np.arange(100) % 3, seed=0, n_val=10, n_test=10).save(path)
    before = path.read_bytes()
    real_fsync = os.fsync

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StateError, match="No space left on device.*previous version is intact"):
        atomic_write_bytes(path, b"new content that does not fit")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


def test_a_held_lock_is_refused_naming_its_owner_and_a_dead_owner_leaves_no_lock(tmp_path):
    with RunLock(tmp_path):
        assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
        with pytest.raises(StateError, match=f"in use by another activelab process \\(pid {os.getpid()} on"):
            with RunLock(tmp_path):
                pass
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from activelab.runlock import RunLock\n"
                               f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateError, match=f"pid {holder.pid} on"):
            with RunLock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the killed owner's lock died with it
        pass


def test_run_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "shared.json", b"{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644


def test_run_refuses_a_locked_run_directory(tmp_path, capsys, fashion):
    (tmp_path / "r").mkdir()
    with RunLock(tmp_path / "r"):
        assert main([*SMALL, "--out", str(tmp_path)]) == 2
    assert "in use by another activelab process" in capsys.readouterr().err


@pytest.fixture()
def finished_run(tmp_path, fashion):
    assert main([*SMALL, "--out", str(tmp_path)]) == 0
    return tmp_path / "r"


def test_a_corrupted_state_file_is_reported_and_never_overwritten(finished_run, capsys):
    path = finished_run / "state.json"
    document = json.loads(path.read_text())
    document["state"]["labelled_ids"][0] += 1
    path.write_text(json.dumps(document))
    before = path.read_bytes()
    capsys.readouterr()
    assert main([*SMALL, "--out", str(finished_run.parent)]) == 2
    err = capsys.readouterr().err
    assert "fails its checksum" in err and err.count("\n") == 1
    assert path.read_bytes() == before


def test_a_foreign_state_file_is_refused(finished_run, capsys):
    (finished_run / "state.json").write_text('{"hello": "world"}')
    capsys.readouterr()
    assert main([*SMALL, "--out", str(finished_run.parent)]) == 2
    assert "not an activelab label-state file" in capsys.readouterr().err


def test_resuming_with_a_different_configuration_is_refused(finished_run, capsys):
    before = (finished_run / "state.json").read_bytes()
    capsys.readouterr()
    assert main([*SMALL, "--seed", "7", "--out", str(finished_run.parent)]) == 2
    assert "different configuration (seed)" in capsys.readouterr().err
    assert (finished_run / "state.json").read_bytes() == before


def test_resume_flag_and_runs_show(finished_run, capsys):
    capsys.readouterr()
    assert main(["run", "--resume", str(finished_run), "--quiet"]) == 0
    assert "round" in capsys.readouterr().out  # the finished rounds are printed again
    assert main(["runs", "show", "r", "--out", str(finished_run.parent), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["n_train_images"] == 20
    assert {"python", "packages", "git_commit", "platform", "torch_threads"} <= set(shown["environment"])
    assert [row["n_labelled"] for row in shown["rounds"]] == [20, 30]


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not an activelab run directory" in capsys.readouterr().err


def write_image_folder(root, corrupt: str | None = None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for index in range(30):
            pixels = (rng.random((12, 12)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index:03d}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"this is not a PNG")
    return root


IMAGE_RUN = ["run", "--data-class", "image-folder", "--n-val", "8", "--n-test", "8", "--n-train-images", "8",
             "--al-samples-per-iter", "4", "--al-iter", "2", "--max-epochs", "1", "--min-steps", "0", "--quiet", "--run-name", "img"]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_an_undecodable_image_met_during_a_run_is_one_sentence(tmp_path, capsys, workers):
    images = write_image_folder(tmp_path / "images", corrupt="dog/011.png")
    out = tmp_path / "out"
    code = main([*IMAGE_RUN, "--data-dir", str(images), "--num-workers", workers, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"activelab: error: {images / 'dog' / '011.png'} could not be decoded as an image " \
                  f"(cannot identify image file '{images / 'dog' / '011.png'}'); replace or remove the file.\n"
    state_file = out / "img" / "state.json"
    if state_file.exists():  # whatever was saved before the bad image was met is intact and loadable
        LabelState.load(state_file)
    with RunLock(out / "img"):  # the failed run released its lock
        pass


def test_a_csv_without_its_label_column_is_one_sentence(tmp_path, capsys):
    images = write_image_folder(tmp_path / "images")
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "\n".join(str(path) for path in sorted(images.rglob("*.png"))) + "\n")
    code = main([*IMAGE_RUN[:2], "image-csv", *IMAGE_RUN[3:], "--data-dir", str(listing), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "label" in err and str(listing.name) in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_truncated_idx_file_is_one_sentence(tmp_path, capsys, fashion):
    import gzip
    import shutil

    source = "/usr/share/datasets/fashion-mnist"
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(f"{source}/{name}", tmp_path / name)
    with gzip.open(f"{source}/train-images-idx3-ubyte.gz", "rb") as handle:
        (tmp_path / "train-images-idx3-ubyte").write_bytes(handle.read()[:100_000])
    code = main(["run", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "truncated or corrupt" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()
