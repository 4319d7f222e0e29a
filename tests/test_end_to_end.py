"""End-to-end runs on a real Fashion-MNIST subset: accuracy, files written, store contents, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from activelab.config import RunConfig
from activelab.data.state import LabelState
from activelab.loop import run_experiment
from activelab.runlock import RunLock
from activelab.store import Store

BASE = dict(data_class="fashion-mnist", model_class="cnn", n_train_images=100, al_samples_per_iter=100,
            al_iter=3, max_epochs=6, min_steps=0, patience=3, n_val=300, n_test=1000, pool_size=2000, seed=0, progress=False)


@pytest.fixture(scope="module")
def margin_run(tmp_path_factory, fashion):
    out = tmp_path_factory.mktemp("results")
    config = RunConfig(**BASE, sampling_method="margin", out=str(out))
    printed = []
    state = run_experiment(config, on_round=printed.append)
    return config, state, printed


def test_accuracy_is_well_above_chance(margin_run):
    _, state, _ = margin_run
    accuracies = [record.test_accuracy for record in state.rounds]
    assert len(accuracies) == 4
    assert accuracies[-1] > 0.6  # chance is 0.1 on ten classes
    assert all(0.0 <= record.test_macro_f1 <= 1.0 for record in state.rounds)


def test_labelled_set_grows_by_exactly_the_batch_each_round(margin_run, fashion):
    _, state, _ = margin_run
    assert [record.n_labelled for record in state.rounds] == [100, 200, 300, 400]
    assert np.bincount(state.labelled_rounds).tolist() == [100, 100, 100, 100]
    assert np.array_equal(state.labelled_labels, fashion.labels[state.labelled_ids])
    assert not np.isin(state.labelled_ids, state.test_ids).any()
    assert not np.isin(state.labelled_ids, state.val_ids).any()
    assert state.test_ids.min() >= 60_000  # the official test split, only used to report


def test_files_and_store_hold_every_round(margin_run):
    config, state, printed = margin_run
    run_dir = config.run_dir
    for name in ("config.json", "environment.json", "state.json"):
        assert (run_dir / name).is_file()
    assert sorted(path.name for path in (run_dir / "models").iterdir()) == [f"round_{k:03d}.pt" for k in range(4)]
    with RunLock(run_dir):  # released at the end
        pass
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["packages"]["torch"] and "git_commit" in environment
    store = Store(run_dir.parent / "activelab.sqlite")
    rounds = store.rounds(config.name)
    assert [row["round"] for row in rounds] == [0, 1, 2, 3]
    assert [row["test_accuracy"] for row in rounds] == [record.test_accuracy for record in state.rounds]
    selections = store.selections(config.name)
    assert len(selections) == 300
    assert [row["item_id"] for row in selections] == state.labelled_ids[100:].tolist()
    assert store.run(config.name)["status"] == "finished"
    assert [record.round for record in printed] == [0, 1, 2, 3]


def test_margin_picks_uncertain_items(margin_run):
    config, _, _ = margin_run
    scores = [row["score"] for row in Store(config.run_dir.parent / "activelab.sqlite").selections(config.name)]
    assert all(score is not None and 0.0 <= score <= 1.0 for score in scores)
    assert np.mean(scores) > 0.5  # 1 - (p1 - p2) is above 0.5 on the items margin chose


def test_rerunning_a_finished_run_changes_nothing(margin_run):
    config, state, _ = margin_run
    before = (config.run_dir / "state.json").read_bytes()
    again = run_experiment(config)
    assert (config.run_dir / "state.json").read_bytes() == before
    assert again.to_dict() == state.to_dict()


def test_a_run_interrupted_after_a_selection_resumes_to_the_same_result(margin_run, tmp_path):
    """Rebuild the state as it was right after round 1's selection was saved, and continue."""
    import shutil

    config, finished, _ = margin_run
    copy_dir = tmp_path / config.name
    shutil.copytree(config.run_dir, copy_dir)
    state = LabelState.load(copy_dir / "state.json")
    pending_ids = state.labelled_ids[200:300]
    state.labelled_ids, state.labelled_labels, state.labelled_rounds = (
        state.labelled_ids[:200], state.labelled_labels[:200], state.labelled_rounds[:200])
    state.pending = {"round": 1, "strategy": "margin", "ids": pending_ids.tolist(),
                     "scores": [0.0] * 100, "seconds_score": 0.0, "seconds_select": 0.0}
    state.rounds = state.rounds[:2]
    state.rounds[1].acquired = False
    state.save(copy_dir / "state.json")
    for path in (copy_dir / "models").glob("round_00[23].pt"):
        path.unlink()
    resumed = run_experiment(RunConfig(**{**BASE, "sampling_method": "margin", "out": str(tmp_path)}))
    assert np.array_equal(resumed.labelled_ids, finished.labelled_ids)
    assert [r.test_accuracy for r in resumed.rounds] == [r.test_accuracy for r in finished.rounds]


def test_random_and_margin_start_from_the_same_labels(margin_run, tmp_path):
    config, margin_state, _ = margin_run
    random_state = run_experiment(RunConfig(**{**BASE, "al_iter": 1, "max_epochs": 2},
                                            sampling_method="random", out=str(tmp_path)))
    assert np.array_equal(random_state.labelled_ids[:100], margin_state.labelled_ids[:100])
    assert np.array_equal(random_state.test_ids, margin_state.test_ids)
    assert random_state.n_labelled == 200


def test_warm_start_fine_tunes_across_rounds(tmp_path, fashion):
    config = RunConfig(**{**BASE, "al_iter": 1, "max_epochs": 2}, sampling_method="entropy", warm_start=True,
                       out=str(tmp_path))
    state = run_experiment(config)
    assert [record.n_labelled for record in state.rounds] == [100, 200]
    assert state.rounds[-1].test_accuracy > 0.5
