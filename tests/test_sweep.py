"""Sweeps: the file format and its checks, local and Ray executors, kill-and-resume, failures, merged stores.

The runs are tiny real ones on scikit-learn's bundled digits (20 initial labels, one acquisition of 10,
one epoch), so a cell takes a few seconds, most of it the worker process importing torch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from activelab.errors import ConfigError
from activelab.store import Store
from activelab.sweep import STATUS_FILE, dry_run, load_sweep, merge_stores, run_sweep

TINY = {"data_class": "digits", "model_class": "cnn", "n_train_images": 20, "al_samples_per_iter": 10, "al_iter": 1,
        "max_epochs": 1, "min_steps": 0, "n_val": 50, "n_test": 100, "pool_size": 300}
TWO_BY_TWO = {"sampling_method": ["random", "margin"], "seed": 2}
NAMES = ["digits-random-cnn-seed0", "digits-random-cnn-seed1", "digits-margin-cnn-seed0", "digits-margin-cnn-seed1"]


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(value)


def write_sweep(folder: Path, *, axes=None, fixed=None, sweep=None, name="sweep.toml", text=None) -> Path:
    """A TOML sweep file in ``folder`` writing to ``folder/out`` (the tiny digits settings by default)."""
    path = folder / name
    if text is None:
        sections = {"sweep": {"out": str(folder / "out"), **(sweep or {})},
                    "fixed": TINY if fixed is None else fixed, "axes": TWO_BY_TWO if axes is None else axes}
        text = "\n".join(f"[{section}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in body.items())
                         for section, body in sections.items())
    path.write_text(text)
    return path


def weights_mtimes(out: Path) -> dict[str, float]:
    return {str(path.relative_to(out)): path.stat().st_mtime_ns for path in sorted(out.glob("cells/*/*/models/*.pt"))}


def check_runs(out: Path, names: list[str]) -> None:
    """Every run in the merged store finished with rounds 0 and 1 once each, on 20 then 30 labels."""
    store = Store(out / "activelab.sqlite")
    runs = {row["run_id"]: row for row in store.runs()}
    assert sorted(runs) == sorted(names)
    for name in names:
        assert runs[name]["status"] == "finished"
        rounds = store.rounds(name)
        assert [(row["round"], row["n_labelled"]) for row in rounds] == [(0, 20), (1, 30)]
        assert all(row["test_accuracy"] is not None for row in rounds)
        assert len(store.selections(name)) == 10
        ledger = json.loads((out / "cells" / name / name / "state.json").read_text())["state"]
        assert [record["round"] for record in ledger["rounds"]] == [0, 1]
        assert len(ledger["labelled_ids"]) == len(set(ledger["labelled_ids"])) == 30


# ------------------------------------------------------------------------------------------ the file format


def test_file_format_toml_and_yaml_give_the_same_cells(tmp_path):
    toml = write_sweep(tmp_path, axes={"sampling_method": ["random", "margin"], "seed": 2,
                                       "budget": [{"name": "small", "n_train_images": 20},
                                                  {"name": "big", "n_train_images": 40}],
                                       "max_epochs": [1, 2]},
                       fixed={key: value for key, value in TINY.items() if key not in ("n_train_images", "max_epochs")})
    sweep = load_sweep(toml)
    assert len(sweep.cells) == 2 * 2 * 2 * 2
    first = sweep.cells[0]
    assert first.name == "digits-random-cnn-seed0-small-max_epochs1"
    assert first.axes == {"sampling_method": "random", "seed": 0, "budget": "small", "max_epochs": 1}
    assert first.config.n_train_images == 20 and first.config.progress is False
    assert first.run_dir == tmp_path / "out" / "cells" / first.name / first.name
    assert len({cell.name for cell in sweep.cells}) == len(sweep.cells)
    yaml_text = (f"sweep: {{out: {tmp_path / 'out'}}}\n"
                 "fixed: {data_class: digits, model_class: cnn, al_samples_per_iter: 10, al_iter: 1, n_val: 50,\n"
                 "        min_steps: 0, n_test: 100, pool_size: 300}\n"
                 "axes:\n  sampling_method: [random, margin]\n  seed: 2\n"
                 "  budget: [{name: small, n_train_images: 20}, {name: big, n_train_images: 40}]\n"
                 "  max_epochs: [1, 2]\n")
    yaml_sweep = load_sweep(write_sweep(tmp_path, name="sweep.yaml", text=yaml_text))
    assert [cell.name for cell in yaml_sweep.cells] == [cell.name for cell in sweep.cells]
    assert [cell.config for cell in yaml_sweep.cells] == [cell.config for cell in sweep.cells]
    templated = load_sweep(write_sweep(tmp_path, name="named.toml", sweep={"name": "{sampling_method}-s{seed}"}))
    assert [cell.name for cell in templated.cells] == ["random-s0", "random-s1", "margin-s0", "margin-s1"]
    plan = str(dry_run(sweep))
    assert "16 cell(s)" in plan and first.name in plan and "no time estimate" in plan
    assert not (tmp_path / "out").exists()


BAD_FILES = [
    ("unknown strategy", {"axes": {"sampling_method": ["random", "margn"], "seed": 1}},
     ["[axes] sampling_method", "did you mean margin?"]),
    ("empty axis", {"axes": {"sampling_method": [], "seed": 1}}, ["[axes] sampling_method", "empty"]),
    ("bad type", {"fixed": {**TINY, "max_epochs": "one"}}, ["[fixed] max_epochs", "whole number"]),
    ("bad type in an axis", {"axes": {"sampling_method": ["random"], "augment": ["yes"]}},
     ["[axes] augment", "true or false"]),
    ("unknown key", {"fixed": {**TINY, "max_epoch": 1}}, ["[fixed] max_epoch", "did you mean max_epochs?"]),
    ("alias", {"axes": {"strategies": ["random"]}}, ["[axes] strategies", "sampling_method"]),
    ("unknown sweep key", {"sweep": {"workers": 2}}, ["[sweep] workers"]),
    ("reserved field", {"fixed": {**TINY, "run_name": "x"}}, ["[fixed] run_name"]),
    ("field set twice", {"axes": {"sampling_method": ["random"], "max_epochs": [1, 2]}},
     ["[axes] max_epochs", "also set in [fixed]"]),
    ("zero seeds", {"axes": {"seed": 0}}, ["[axes] seed", ">= 1"]),
    ("value out of range", {"axes": {"sampling_method": ["random"], "lr": [0.001, -1.0]}}, ["[axes] lr", "> 0"]),
    ("budget over the pool", {"fixed": {**TINY, "al_iter": 100}}, ["pool_size is 300"]),
    ("repeated value", {"axes": {"seed": [1, 1]}}, ["[axes] seed", "twice"]),
]


@pytest.mark.parametrize("what, parts, expected", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_sweep_files_are_refused_in_one_sentence_before_anything_runs(tmp_path, what, parts, expected):
    path = write_sweep(tmp_path, **parts)
    with pytest.raises(ConfigError) as raised:
        load_sweep(path)
    message = str(raised.value)
    assert str(path) in message, message
    for part in expected:
        assert part in message, message
    assert "\n" not in message and message.rstrip().endswith((".", "?")), message
    assert not (tmp_path / "out").exists()


def test_unreadable_and_misnamed_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_sweep(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_sweep(write_sweep(tmp_path, text="[axes\nseed = 1\n"))
    with pytest.raises(ConfigError, match=r"\[tests\]: unknown section"):
        load_sweep(write_sweep(tmp_path, text="[tests]\nseed = 1\n"))
    with pytest.raises(ConfigError, match="must be a sweep file ending in .toml"):
        load_sweep(write_sweep(tmp_path, name="sweep.json", text="{}"))


def test_importing_sweep_does_not_import_ray_and_a_missing_ray_is_one_sentence(tmp_path, monkeypatch):
    code = "import sys, activelab.sweep, activelab.executors; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    sweep = load_sweep(write_sweep(tmp_path))
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'activelab\[ray\]'"):
        run_sweep(sweep, executor="ray", progress=False)
    with pytest.raises(ConfigError, match="--executor ray"):
        run_sweep(sweep, ray_address="auto", progress=False)
    with pytest.raises(ConfigError, match="unknown executor 'slurm'"):
        run_sweep(sweep, executor="slurm", progress=False)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ running


def test_local_sweep_runs_every_cell_and_skips_them_the_second_time(tmp_path, capsys):
    sweep = load_sweep(write_sweep(tmp_path))
    result = run_sweep(sweep, workers=2)
    assert sorted(result.done) == sorted(NAMES) and not result.failed and not result.skipped
    out = tmp_path / "out"
    check_runs(out, NAMES)
    status = json.loads((out / STATUS_FILE).read_text())
    assert {entry["status"] for entry in status["cells"].values()} == {"done"}
    # each worker process started with OMP_NUM_THREADS=1 and torch limited to one thread: 2 workers, 1 thread each
    assert {(entry["threads"], entry["omp_num_threads"]) for entry in status["cells"].values()} == {(1, "1")}
    progress = capsys.readouterr().err
    assert "sweep: 4/4 done (0 skipped), 0 running, 0 failed" in progress and "elapsed" in progress
    mtimes = weights_mtimes(out)
    assert len(mtimes) == 8
    again = run_sweep(sweep, workers=2, progress=False)
    assert sorted(again.skipped) == sorted(NAMES) and not again.done
    assert weights_mtimes(out) == mtimes
    plan = dry_run(sweep)
    assert {cell.status for cell in plan.cells} == {"finished"} and not plan.to_run
    assert "4 cell(s) done" in result.summary() and "0 failed" in result.summary()


def test_ray_executor_runs_the_sweep_on_a_local_ray_instance(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'activelab[ray]')")
    sweep = load_sweep(write_sweep(tmp_path))
    result = run_sweep(sweep, executor="ray", progress=False)
    assert sorted(result.done) == sorted(NAMES), result.failed
    check_runs(tmp_path / "out", NAMES)
    status = json.loads((tmp_path / "out" / STATUS_FILE).read_text())
    assert status["executor"] == "ray" and {entry["threads"] for entry in status["cells"].values()} == {1}
    assert not ray.is_initialized()  # the instance the executor started is stopped


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
def test_a_killed_sweep_resumes_without_running_a_cell_twice(tmp_path):
    path = write_sweep(tmp_path, axes={"sampling_method": ["margin"], "seed": 3})
    names = [f"digits-margin-cnn-seed{seed}" for seed in range(3)]
    out = tmp_path / "out"
    code = ("import sys; from activelab.sweep import load_sweep, run_sweep; "
            "run_sweep(load_sweep(sys.argv[1]), workers=1, progress=False)")
    driver = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    second = out / "cells" / names[1] / names[1] / "state.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            try:
                cells = json.loads((out / STATUS_FILE).read_text())["cells"]
            except (OSError, ValueError):
                cells = {}
            if cells.get(names[0], {}).get("status") == "done" and second.exists():
                break
            time.sleep(0.02)
        assert driver.poll() is None, "the sweep ended before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        # the worker dies with the sweep (PR_SET_PDEATHSIG), so it holds no run's lock
        for _ in range(200):
            if not _processes_mentioning(str(out)):
                break
            time.sleep(0.05)
        assert not _processes_mentioning(str(out))
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        for pid in _processes_mentioning(str(out)):
            os.kill(pid, signal.SIGKILL)
    at_kill = json.loads(second.read_text())["state"]["rounds"]
    first_weights = weights_mtimes(out)
    first_weights = {key: value for key, value in first_weights.items() if names[0] in key}
    assert len(first_weights) == 2
    result = run_sweep(load_sweep(path), workers=1, progress=False)
    assert result.skipped == [names[0]] and sorted(result.done) == sorted(names[1:]) and not result.failed
    check_runs(out, names)
    assert {key: value for key, value in weights_mtimes(out).items() if names[0] in key} == first_weights
    assert (out / "cells" / names[0] / "cell.log").read_text().count(" starts ") == 1
    print(f"killed with {len(at_kill)} round(s) of the second cell in its ledger")


def test_a_failing_cell_is_recorded_and_the_others_finish(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    fixed = {**{key: value for key, value in TINY.items() if key != "data_class"}, "data_dir": str(photos)}
    path = write_sweep(tmp_path, fixed=fixed, axes={"data_class": ["digits", "image-folder"],
                                                    "sampling_method": ["random"]})
    sweep = load_sweep(path)
    photos.rmdir()  # the data vanishes after the sweep was checked
    result = run_sweep(sweep, workers=2, progress=False)
    assert result.done == ["digits-random-cnn-seed0"]
    assert list(result.failed) == ["image-folder-random-cnn-seed0"]
    message = result.failed["image-folder-random-cnn-seed0"]
    assert str(photos) in message and "does not exist" in message and "\n" not in message
    status = json.loads((tmp_path / "out" / STATUS_FILE).read_text())["cells"]
    assert status["image-folder-random-cnn-seed0"]["status"] == "failed"
    assert status["image-folder-random-cnn-seed0"]["error"] == message
    assert status["digits-random-cnn-seed0"]["status"] == "done"
    assert "failed:" in result.summary() and message in result.summary()


# ------------------------------------------------------------------------------------------ the merged store


def _write_cell_store(folder: str, run_id: str, barrier) -> None:
    from activelab.records import RoundRecord

    store = Store(Path(folder) / "activelab.sqlite")
    barrier.wait()
    store.record_run(run_id, created="2026-01-01T00:00:00+00:00", dataset="digits", strategy="margin", model="cnn",
                     seed=0, run_dir=Path(folder) / run_id, config={"seed": 0}, environment={})
    for index in range(5):
        store.record_round(run_id, RoundRecord(index, 20 + 10 * index, test_accuracy=0.5, seconds_evaluate=0.1))
        store.record_selection(run_id, index, list(range(10)), [0.1] * 10, [1] * 10)
    store.finish_run(run_id, "2026-01-01T00:01:00+00:00")


def test_eight_cells_finishing_at_once_lose_no_row(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, axes={"seed": 8}))
    for cell in sweep.cells:
        cell.folder.mkdir(parents=True)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(sweep.cells))
    processes = [context.Process(target=_write_cell_store, args=(str(cell.folder), cell.name, barrier))
                 for cell in sweep.cells]
    for process in processes:
        process.start()
    while any(process.is_alive() for process in processes):
        merge_stores(sweep)  # the driver merges while the cells write
    assert all(process.exitcode == 0 for process in processes)
    merge_stores(sweep)
    merge_stores(sweep)  # merging twice duplicates nothing
    store = Store(sweep.store_path)
    runs = store.runs()
    assert len(runs) == 8 and {run["status"] for run in runs} == {"finished"}
    assert len(store.rounds()) == 8 * 5
    assert sum(len(store.selections(cell.name)) for cell in sweep.cells) == 8 * 5 * 10


def test_the_sweep_command_lists_the_cells_or_refuses_a_bad_file_in_one_sentence(tmp_path, capsys):
    from cli_helpers import assert_one_sentence, run_cli

    good = write_sweep(tmp_path, axes=TWO_BY_TWO, fixed=TINY)
    code, out, _ = run_cli(capsys, "sweep", good, "--dry-run")
    assert code == 0 and all(name in out for name in NAMES) and "4 cell(s)" in out
    bad = write_sweep(tmp_path, axes={"sampling_method": ["margn"], "seed": 1}, fixed=TINY, name="bad.toml")
    assert_one_sentence(*run_cli(capsys, "sweep", bad), "did you mean margin?")
    assert not (tmp_path / "out").exists()


EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.*"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_every_example_sweep_file_is_valid(path):
    """The sweep files the README and docs/results.md run pass every check (strategies, fields, types)."""
    sweep = load_sweep(path)
    assert sweep.cells and len({cell.name for cell in sweep.cells}) == len(sweep.cells)
