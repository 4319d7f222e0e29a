"""CLI on results: runs/export without a store, unwritable export targets, broken pipes, `runs show` with
the pending selection, `export --pending`, and progress on stderr with results on stdout.

Run directories are fabricated (RunConfig + LabelState + Store), so nothing is trained here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli, assert_one_sentence
from activelab import cli
from activelab.cli import main
from activelab.config import RunConfig
from activelab.data.state import LabelState
from activelab.records import RoundRecord
from activelab.io import atomic_write_json
from activelab.store import Store

RUN = "digits-margin-cnn-seed0"


def snapshot(folder: Path) -> dict:
    return {str(path): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def round_record(**values):
    return RoundRecord(**values)


def make_run(out: Path, *, pending: bool = True, **config_values) -> Path:
    """A digits run directory with one evaluated round (and a pending selection), recorded in the store."""
    config = RunConfig(**{"sampling_method": "margin", "data_class": "digits", "n_train_images": 20, "n_val": 50,
                          "n_test": 100, "out": str(out), **config_values})
    run_dir = config.run_dir
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", config.to_dict())
    atomic_write_json(run_dir / "environment.json", {"python": "3.11.7", "packages": {"torch": "2.0"}})
    state = LabelState.create(np.arange(1797) % 10, seed=0, n_val=50, n_test=100)
    state.add(state.pool_ids[:20], np.zeros(20, np.int64), 0)
    state.rounds.append(round_record(round=0, n_labelled=20, labels_digest=state.labels_digest(), seconds_evaluate=0.5))
    if pending:
        state.pending = {"round": 0, "strategy": "margin", "ids": state.pool_ids[:3].tolist(),
                         "scores": [0.75, 0.5, None], "seconds_score": 0.1, "seconds_select": 0.01}
    state.save(run_dir / "state.json")
    store = Store(out / "activelab.sqlite")
    store.record_run(config.name, created="2024-01-01T00:00:00+00:00", dataset=config.data_class,
                     strategy=config.sampling_method, model=config.model_class, seed=0, run_dir=run_dir.resolve(),
                     config=config.to_dict(), environment={"python": "3.11.7", "packages": {"torch": "2.0"},
                                                           "git_commit": "abc", "cuda_available": False})
    store.record_round(config.name, round_record(round=0, n_labelled=20, test_accuracy=0.5, test_macro_f1=0.4,
                                                 val_accuracy=0.45, epochs=3, seconds_train=1.0,
                                                 seconds_evaluate=0.5))
    return run_dir


# ------------------------------------------------------------------ no store, bad targets


@pytest.mark.parametrize("command", [["runs"], ["runs", "show", RUN], ["export"], ["export", "--pending"]])
def test_missing_store_is_one_sentence(capsys, tmp_path, command):
    missing = tmp_path / "missing"
    assert_one_sentence(*run_cli(capsys, *command, "--out", str(missing)), f"there is no results store in {missing}")
    assert not missing.exists()
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    assert_one_sentence(*run_cli(capsys, *command, "--out", str(a_file)), "there is no results store in")
    assert a_file.read_text() == "keep"


def test_export_to_a_missing_folder_or_a_directory_is_one_sentence(capsys, tmp_path):
    out = tmp_path / "results"
    make_run(out)
    before = snapshot(tmp_path)
    assert_one_sentence(*run_cli(capsys, "export", "--out", str(out), "--to", "/nonexistent/dir/x.csv"),
                        "cannot write /nonexistent/dir/x.csv: the folder /nonexistent/dir does not exist.")
    assert_one_sentence(*run_cli(capsys, "export", "--out", str(out), "--to", str(out)), "it is a directory")
    assert snapshot(tmp_path) == before


def test_broken_pipe_is_quiet(capsys, monkeypatch):
    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(["strategies"])
    monkeypatch.undo()
    assert code == cli.BROKEN_PIPE_EXIT
    assert capsys.readouterr().err == ""


def test_broken_pipe_in_a_real_pipe_prints_nothing():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before activelab writes anything
    try:
        result = subprocess.run([sys.executable, "-m", "activelab.cli", "strategies", "--verbose"],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == cli.BROKEN_PIPE_EXIT
    assert result.stderr == ""


# ------------------------------------------------------------------ runs, runs show, export


def test_runs_lists_and_show_is_readable_with_the_pending_selection(capsys, tmp_path):
    out = tmp_path / "results"
    make_run(out)
    before = snapshot(tmp_path)
    code, listing, _ = run_cli(capsys, "runs", "--out", str(out))
    assert code == 0 and RUN in listing and "50.00%" in listing
    for argv in (["runs", "show", RUN, "--out", str(out)], ["runs", "show", "--out", str(out), RUN],
                 ["runs", "--out", str(out), "show", RUN]):
        code, shown, err = run_cli(capsys, *argv)
        assert code == 0 and not err
        assert shown.startswith(f"run {RUN}: running")
        assert "margin on digits with cnn, seed 0" in shown and "settings:" in shown and "machine:" in shown
        assert "test acc" in shown and "50.00%" in shown
        assert "pending selection of round 0 (margin, 3 items" in shown
        lines = shown.split("pending selection", 1)[1].splitlines()
        header = next(index for index, line in enumerate(lines) if line.split()[:2] == ["rank", "id"])
        rows = lines[header + 1:header + 4]
        assert [row.split()[0] for row in rows] == ["0", "1", "2"]
        assert rows[0].split()[2] == "0.75" and rows[2].split()[2] == "-"
        assert rows[0].split()[3] == "known"  # digits has every label
        assert rows[0].split()[1] == rows[0].split()[4]  # digits' key of an item is its position
        assert max(len(line) for line in shown.splitlines()) <= 100
    assert snapshot(tmp_path) == before


def test_runs_show_json_has_rounds_and_pending(capsys, tmp_path):
    out = tmp_path / "results"
    run_dir = make_run(out)
    code, text, _ = run_cli(capsys, "runs", "show", RUN, "--out", str(out), "--json")
    document = json.loads(text)
    assert code == 0 and document["run_id"] == RUN and document["rounds"][0]["n_labelled"] == 20
    state = LabelState.load(run_dir / "state.json")
    assert [row["id"] for row in document["pending"]] == state.pending["ids"]
    assert [row["key"] for row in document["pending"]] == [str(item) for item in state.pending["ids"]]


def test_runs_show_without_pending_and_with_keys_unavailable(capsys, tmp_path):
    out = tmp_path / "results"
    make_run(out, pending=False)
    code, shown, _ = run_cli(capsys, "runs", "show", RUN, "--out", str(out))
    assert code == 0 and "pending selection" not in shown
    other = tmp_path / "other"
    make_run(other, run_name="fm", data_class="fashion-mnist", data_dir=str(tmp_path / "nowhere"))
    code, shown, err = run_cli(capsys, "runs", "show", "fm", "--out", str(other))
    assert code == 0 and not err
    assert "pending selection" in shown and "keys unavailable:" in shown


def test_runs_show_unknown_run_suggests(capsys, tmp_path):
    out = tmp_path / "results"
    make_run(out)
    assert_one_sentence(*run_cli(capsys, "runs", "show", "digits-margin-cnn-seed1", "--out", str(out)),
                        f"no run 'digits-margin-cnn-seed1'", f"did you mean {RUN}?")
    assert_one_sentence(*run_cli(capsys, "runs", "show", "zzz", "--out", str(out)), "see `activelab runs`.")


def make_partly_labelled_run(tmp_path: Path) -> tuple[Path, Path]:
    """An `arrays` run whose pending selection holds two unlabelled items and one labelled item."""
    images = tmp_path / "images.npz"
    labels = np.arange(120) % 3
    labels[::2] = -1
    np.savez(images, X=np.random.default_rng(0).integers(0, 255, (120, 8, 8), dtype=np.uint8), y=labels)
    out = tmp_path / "results"
    run_dir = make_run(out, run_name="mine", data_class="arrays", data_dir=str(images))
    from activelab.data.sources import get_source

    dataset = get_source("arrays").load(images)
    state = LabelState.create(dataset.labels, seed=0, dataset_fingerprint=dataset.fingerprint(), n_val=10, n_test=10)
    state.add(state.acquire_initial_ids(10, dataset.labels), np.zeros(10, np.int64), 0)
    state.rounds = LabelState.load(run_dir / "state.json").rounds
    state.pending = LabelState.load(run_dir / "state.json").pending
    pool = state.pool_ids
    chosen = [int(pool[pool % 2 == 0][0]), int(pool[pool % 2 == 1][0]), int(pool[pool % 2 == 0][1])]
    state.pending = {**state.pending, "ids": chosen}
    state.save(run_dir / "state.json")
    return out, run_dir


def test_export_pending_writes_the_items_that_need_a_label(capsys, tmp_path):
    out, run_dir = make_partly_labelled_run(tmp_path)
    make_run(out, run_name="done", pending=False)
    ids = LabelState.load(run_dir / "state.json").pending["ids"]
    target = tmp_path / "todo.csv"
    code, said, _ = run_cli(capsys, "export", "--out", str(out), "--pending", "--to", str(target))
    assert code == 0 and f"wrote 2 pending item(s) to {target}" in said
    rows = list(csv.DictReader(target.open()))
    assert list(rows[0]) == ["run_id", "round", "strategy", "rank", "id", "key", "score", "label"]
    assert [int(row["id"]) for row in rows] == [ids[0], ids[2]] and [row["rank"] for row in rows] == ["0", "2"]
    assert {row["run_id"] for row in rows} == {"mine"} and all(row["label"] == "" for row in rows)
    code, shown, _ = run_cli(capsys, "runs", "show", "mine", "--out", str(out))
    marks = [line.split()[3] for line in shown.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"])][-3:]
    assert marks == ["needed", "known", "needed"]
    code, text, _ = run_cli(capsys, "export", "--out", str(out), "--pending", "--format", "json", "--run", "done")
    assert code == 0 and json.loads(text) == []


def test_exported_pending_file_imports_with_label(capsys, tmp_path):
    out, run_dir = make_partly_labelled_run(tmp_path)
    target = tmp_path / "todo.csv"
    run_cli(capsys, "export", "--out", str(out), "--pending", "--run", "mine", "--to", str(target))
    rows = list(csv.DictReader(target.open()))
    with target.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "label": "1"} for row in rows)
    code, said, err = run_cli(capsys, "label", str(run_dir), "--labels", str(target))
    assert code == 0, err
    assert "recorded 2 label(s)" in said
    code, text, _ = run_cli(capsys, "export", "--out", str(out), "--pending", "--format", "json")
    assert json.loads(text) == []


def test_export_pending_when_the_dataset_is_gone(capsys, tmp_path):
    out, run_dir = make_partly_labelled_run(tmp_path)
    (tmp_path / "images.npz").unlink()
    assert_one_sentence(*run_cli(capsys, "export", "--out", str(out), "--pending"),
                        "cannot tell which pending items of run mine need a label (")


def test_export_rounds_of_one_run(capsys, tmp_path):
    out = tmp_path / "results"
    make_run(out)
    make_run(out, run_name="other")
    code, text, _ = run_cli(capsys, "export", "--out", str(out))
    assert code == 0 and len(list(csv.DictReader(io.StringIO(text)))) == 2
    code, text, _ = run_cli(capsys, "export", "--out", str(out), "--run", "other")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert code == 0 and [row["run_id"] for row in rows] == ["other"] and rows[0]["test_accuracy"] == "0.5"
    assert_one_sentence(*run_cli(capsys, "export", "--out", str(out), "--run", "othr"), "did you mean other?")


# ------------------------------------------------------------------ progress on stderr, results on stdout


def test_progress_lines_go_to_stderr_and_quiet_keeps_warnings(capsys, monkeypatch):
    def noisy(args):
        logging.getLogger("activelab.loop").info("round 1/3: train")
        logging.getLogger("activelab.loop").warning("something odd")
        print("result")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "demo", noisy)
    code, out, err = run_cli(capsys, "demo")
    assert code == 0 and out == "result\n"
    assert err == "round 1/3: train\nactivelab: warning: something odd\n"
    code, out, err = run_cli(capsys, "demo", "--quiet")
    assert out == "result\n" and err == "activelab: warning: something odd\n"
    assert not any(isinstance(handler, logging.StreamHandler) and handler.formatter.__class__.__name__ ==
                   "_ProgressFormatter" for handler in logging.getLogger("activelab").handlers)


def test_title_and_header_come_from_on_start_before_any_round(capsys, monkeypatch, tmp_path):
    import activelab.loop

    events = []

    def fake_run_experiment(config, *, on_round=None, on_start=None):
        events.append("validated")
        on_start()
        print("<training>")
        on_round(round_record(round=0, n_labelled=100, test_accuracy=0.8, epochs=2, seconds_train=1.0))
        return types.SimpleNamespace(pending=None)

    monkeypatch.setattr(activelab.loop, "run_experiment", fake_run_experiment)
    code, out, err = run_cli(capsys, "run", "--sampling-method", "entropy", "--out", str(tmp_path / "r"), "--quiet")
    lines = out.splitlines()
    assert code == 0 and events == ["validated"]
    assert lines[0] == "run fashion-mnist-entropy-cnn-seed0: entropy on fashion-mnist with cnn, seed 0"
    assert lines[1].split()[:2] == ["round", "labels"] and lines[2] == "<training>"
    assert lines[3].split()[:3] == ["0", "100", "80.00%"] and lines[4].startswith("results: ")
