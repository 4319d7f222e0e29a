"""activelab.diagnostics and the report's --diagnostics: class recall of the last model and typicality of the
acquired images, on known answers and on tiny real runs on scikit-learn's digits."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from activelab.cli import main
from activelab.config import RunConfig
from activelab.diagnostics import Reference, class_recall, diagnose_run
from activelab.errors import ConfigError, StateError
from activelab.loop import run_experiment
from activelab.report import write_report
from activelab.store import Store

TINY = {"data_class": "digits", "model_class": "cnn", "n_train_images": 20, "al_samples_per_iter": 10, "al_iter": 2,
        "max_epochs": 2, "min_steps": 20, "n_val": 50, "n_test": 200, "pool_size": 400, "trackers": [], "progress": False}


def test_class_recall_by_hand():
    recall, counts = class_recall(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 4)
    assert counts.tolist() == [2, 2, 2, 0]
    assert recall[:3].tolist() == [0.5, 0.5, 1.0] and math.isnan(recall[3])


def line_reference(k: int = 2) -> Reference:
    """100 reference points at (i, 0, 0), ids 0..99; all 3 components kept, so distances are Euclidean."""
    points = np.zeros((100, 3))
    points[:, 0] = np.arange(100)
    return Reference.fit(points, np.arange(100), k=k, components=3)


def test_neighbour_distances_by_hand():
    reference = line_reference(k=2)
    # inner points: neighbours at 1 and 1; the two ends: 1 and 2 -> (98 * 1 + 2 * 1.5) / 100
    assert reference.mean_distance == pytest.approx(1.01)
    # an image of the sample is not its own neighbour; a new one at (50, 3, 0) has (50,0,0) at 3, then 49 or 51
    assert reference.distance(np.array([[50.0, 0, 0]]), np.array([50])) == pytest.approx(1.0)
    assert reference.distance(np.array([[50.0, 3, 0]]), np.array([1000])) == pytest.approx((3 + math.sqrt(10)) / 2)
    assert reference.distance(np.array([[-10.0, 0, 0], [50.0, 0, 0]]), np.array([-1, -2])) == pytest.approx(
        ((10 + 11) / 2 + 0.5) / 2)
    assert math.isnan(reference.distance(np.empty((0, 3)), np.empty(0, np.int64)))


def test_typicality_does_not_depend_on_position_or_rotation():
    rng = np.random.default_rng(0)
    features, queries = rng.normal(size=(300, 5)), rng.normal(size=(20, 5)) * 3
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    ids, query_ids = np.arange(300), np.arange(1000, 1020)
    plain = Reference.fit(features, ids, components=5)
    moved = Reference.fit(features @ rotation + 7.0, ids, components=5)
    assert moved.mean_distance == pytest.approx(plain.mean_distance)
    assert moved.distance(queries @ rotation + 7.0, query_ids) == pytest.approx(plain.distance(queries, query_ids))
    # spread-out queries are atypical, the sample's own points exactly as typical as the sample
    assert plain.distance(queries, query_ids) > 1.5 * plain.mean_distance
    assert plain.distance(features, ids) == pytest.approx(plain.mean_distance)


def test_too_small_a_sample_is_one_sentence():
    with pytest.raises(ConfigError, match="too few"):
        Reference.fit(np.zeros((5, 2)), np.arange(5), k=10)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """random, margin and coreset on digits, seeds 0 and 1, in one results folder."""
    out = tmp_path_factory.mktemp("diagnostics")
    for strategy in ("random", "margin", "coreset"):
        for seed in (0, 1):
            run_experiment(RunConfig(**TINY, sampling_method=strategy, seed=seed, out=str(out),
                                     run_name=f"{strategy}-{seed}"))
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_recall_comes_from_the_last_model_on_the_runs_test_items(results):
    store = Store(results / "activelab.sqlite")
    for run in store.runs():
        found = diagnose_run(results / run["run_id"])
        last = store.rounds(run["run_id"])[-1]
        assert found.class_test_items.sum() == 200 and found.n_acquired == 20
        weighted = np.nansum(found.class_recall * found.class_test_items) / found.class_test_items.sum()
        assert weighted == pytest.approx(last["test_accuracy"], abs=1e-6)
        assert found.typicality == pytest.approx(found.acquired_distance / found.reference_distance)


def test_the_report_with_diagnostics_writes_its_tables_figures_and_section(results, tmp_path):
    page = write_report(results, tmp_path / "report", diagnostics=True)
    folder = page.parent
    recall = read_csv(folder / "class_recall_runs.csv")
    assert len(recall) == 6 * 10 and {row["class_name"] for row in recall} == {str(digit) for digit in range(10)}
    runs = {(row["strategy"], row["seed"]): row for row in read_csv(folder / "diagnostics_runs.csv")}
    assert set(runs) == {(strategy, seed) for strategy in ("random", "margin", "coreset") for seed in "01"}
    by_run = {}
    for row in recall:
        by_run.setdefault((row["strategy"], row["seed"]), {})[int(row["class"])] = float(row["recall"])
    for (strategy, seed), row in runs.items():
        if strategy == "random":
            assert row["shortfall"] == ""
            continue
        gaps = {label: by_run[("random", seed)][label] - value for label, value in by_run[(strategy, seed)].items()}
        assert float(row["shortfall"]) == pytest.approx(max(gaps.values()))
        assert gaps[int(row["shortfall_class"])] == pytest.approx(max(gaps.values()))
    summary = {row["strategy"]: row for row in read_csv(folder / "diagnostics.csv")}
    assert summary["margin"]["n_pairs"] == "2" and summary["random"]["n_pairs"] == "0"
    typicality = [float(runs[("coreset", seed)]["typicality"]) for seed in "01"]
    assert float(summary["coreset"]["typicality_mean"]) == pytest.approx(np.mean(typicality))
    for name in ("digits_cnn_20+10_typicality.png", "digits_cnn_20+10_class_recall.png"):
        with Image.open(folder / name) as image:
            assert image.size == (800, 500)
    text = page.read_text()
    assert "how typical the acquired images are" in text and "class most short of random" in text


def test_coreset_buys_less_typical_images_than_random(results):
    """CoreSet covers the pool, so it picks far-apart, atypical images; random picks are typical on average.
    (On these 20 picks from 400 digits: about 1.13 against 1.03.)"""
    typicality = {strategy: np.mean([diagnose_run(results / f"{strategy}-{seed}").typicality for seed in (0, 1)])
                  for strategy in ("random", "coreset")}
    assert typicality["coreset"] > typicality["random"] + 0.05
    assert 0.8 < typicality["random"] < 1.2


def test_a_run_without_its_model_is_a_note_and_the_report_still_written(results, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    store = Store(copy / "activelab.sqlite")
    with store._connect() as connection:  # the runs now live in the copy
        connection.execute("UPDATE runs SET run_dir = replace(run_dir, ?, ?)", (str(results), str(copy)))
    for model in (copy / "margin-1" / "models").glob("*.pt"):
        model.unlink()
    page = write_report(copy, tmp_path / "report", diagnostics=True)
    missing = copy / "margin-1" / "models" / "round_002.pt"
    assert f"no diagnostics for margin-1: {missing} is missing" in page.read_text()
    assert {row["run_id"] for row in read_csv(page.parent / "diagnostics_runs.csv")} == {
        f"{strategy}-{seed}" for strategy in ("random", "margin", "coreset") for seed in (0, 1)} - {"margin-1"}
    with pytest.raises(StateError, match="missing"):
        diagnose_run(copy / "margin-1")


def test_the_report_command_takes_diagnostics(results, tmp_path, capsys):
    assert main(["report", str(results), "--out", str(tmp_path / "report"), "--diagnostics"]) == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "report" / "diagnostics.csv").exists()


def test_the_docs_table_script_reads_the_reports_numbers(results, tmp_path):
    page = write_report(results, tmp_path / "report", diagnostics=True)
    script = Path(__file__).parents[1] / "scripts" / "results_table.py"
    done = subprocess.run([sys.executable, str(script), str(page.parent)], capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 + 3 and lines[2].startswith("| random | 2 |")
    aubc = {row["strategy"]: float(row["mean"]) for row in read_csv(page.parent / "aubc.csv")
            if row["metric"] == "test_accuracy"}
    paired = {row["strategy"]: row for row in read_csv(page.parent / "paired.csv") if row["metric"] == "test_accuracy"}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[2].startswith(f"{100 * aubc[cells[0]]:.1f}")
        if cells[0] != "random":
            assert cells[3].startswith(f"{100 * float(paired[cells[0]]['mean_difference']):+.2f}")
            assert cells[4] == f"{paired[cells[0]]['wins']}/2"
    missing = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr
