"""The step-wise Run: query / teach / skip / relabel / remove on real Fashion-MNIST, locks per step, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from activelab.config import RunConfig
from activelab.errors import ConfigError, StateError
from activelab.loop import run_experiment
from activelab.run import Run

FIXTURE = Path(__file__).parent / "fixtures" / "selections-before-run-api.json"
SMALL = dict(pool_size=600, n_test=300, n_val=100, n_train_images=40, al_samples_per_iter=30, max_epochs=2,
             mc_samples=4, seed=1, progress=False, min_steps=0, monitor="val_acc", initial="random")


@pytest.mark.parametrize("strategy", ["margin", "bald", "random", "coreset"])
def test_simulated_selections_are_those_recorded_before_the_step_wise_redesign(strategy, tmp_path, fashion):
    """Recorded at commit 5fb07b9 with the one-call loop; the loop over the public steps must not change them."""
    recorded = json.loads(FIXTURE.read_text())[strategy]
    state = run_experiment(RunConfig(sampling_method=strategy, al_iter=2, out=str(tmp_path), run_name=strategy,
                                     **SMALL))
    assert state.labelled_ids.tolist() == recorded["labelled_ids"]
    assert state.labelled_rounds.tolist() == recorded["labelled_rounds"]
    assert [record.test_accuracy for record in state.rounds] == recorded["test_accuracy"]


@pytest.fixture()
def run(tmp_path, fashion):
    return Run.create(tmp_path / "weeds", data="fashion-mnist", model="cnn", strategy="margin", **SMALL)


def test_query_teach_skip_cycle(run, fashion):
    batch = run.query(20)
    assert len(batch) == 20 and batch.round == 0 and run.rounds[0].evaluated
    rows = batch.to_frame()
    assert list(rows.columns) == ["rank", "id", "key", "score", "guess", "confidence"]
    assert rows["rank"].tolist() == list(range(20)) and rows["score"].is_monotonic_decreasing
    assert set(rows["guess"]) <= set(fashion.class_names) and rows["confidence"].between(0, 1).all()
    taught, skipped, left = batch.ids[:12], batch.ids[12:15], batch.ids[15:]
    names = [fashion.class_names[label] for label in fashion.labels[taught[:6]]]
    run.teach(taught[:6], names, annotator="ada")                       # by class name
    run.teach(taught[6:], fashion.labels[taught[6:]], annotator="bo")   # by index
    assert run.pending.ids.tolist() == batch.ids[12:].tolist()          # the rest stay pending
    run.skip(skipped, annotator="bo")
    assert run.pending.ids.tolist() == left.tolist()
    assert all(run.labelled[int(item)] == fashion.class_names[fashion.labels[item]] for item in taught)
    assert [event["op"] for event in run.history] == ["teach", "teach", "teach", "skip"]  # initial labels first
    assert run.history[1]["annotator"] == "ada" and run.history[-1]["ids"] == skipped.tolist()
    assert run.stale  # 12 new labels: the next query trains round 1 first
    again = run.query(20)
    assert again.round == 1 and len(run.rounds) == 2 and run.rounds[1].n_labelled == 52
    assert not np.isin(again.ids, taught).any()
    reopened = Run.open(run.run_dir)
    assert reopened.pending.ids.tolist() == again.ids.tolist() and reopened.query(20).ids.tolist() == again.ids.tolist()


def test_skipped_items_are_not_offered_again_in_the_same_round(run):
    batch = run.query(10)
    run.skip(batch.ids)
    assert run.pending is None and not run.stale
    second = run.query(10)
    assert second.round == 0 and not np.isin(second.ids, batch.ids).any()


def test_relabel_and_remove_are_recorded_with_who_and_when(run, fashion):
    first = int(run.state.labelled_ids[0])
    old = run.labelled[first]
    new = next(name for name in fashion.class_names if name != old)
    run.relabel([first], [new], annotator="cy")
    assert run.labelled[first] == new and run.stale
    run.remove([first], annotator="cy")
    assert first not in run.labelled and first in run.state.pool_ids
    relabel, remove = run.history[-2:]
    assert (relabel["op"], relabel["previous"], relabel["annotator"]) == ("relabel", [fashion.class_names.index(old)], "cy")
    assert remove["op"] == "remove" and remove["ids"] == [first] and remove["time"]
    with pytest.raises(ConfigError, match="has no label in this run"):
        run.remove([first])
    with pytest.raises(ConfigError, match="not one of the classes"):
        run.relabel([int(run.state.labelled_ids[0])], ["wolf"])


def test_a_run_without_labels_starts_with_a_random_batch(tmp_path, fashion):
    run = Run.create(tmp_path / "fresh", data="fashion-mnist", **{**SMALL, "n_train_images": 0})
    batch = run.query(15)
    assert batch.strategy.startswith("random") and batch.guesses is None and not run.rounds
    with pytest.raises(ConfigError, match="no labels to train on"):
        run.fit()
    run.teach(batch.ids, fashion.labels[batch.ids])
    assert run.query(10).round == 0 and run.rounds[0].n_labelled == 15


def _python(code: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_run_killed_between_query_and_teach_resumes_with_the_same_pending_batch(run):
    code = (f"from activelab.run import Run\nrun = Run.open({str(run.run_dir)!r})\nrun.fit()\nrun.evaluate()\n"
            "run.query(25)\n")
    killed = _python(code, ACTIVELAB_KILL_AT="selection-saved:1")
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    survivor = Run.open(run.run_dir)
    pending = survivor.pending
    assert pending is not None and len(pending) == 25
    assert survivor.query(25).ids.tolist() == pending.ids.tolist()
    fresh = Run.create(run.run_dir.parent / "twin", data="fashion-mnist", model="cnn", strategy="margin", **SMALL)
    assert fresh.query(25).ids.tolist() == pending.ids.tolist()  # the same as a run never interrupted


def test_labels_go_in_while_another_process_has_the_run_open_but_not_while_it_writes(run, fashion):
    batch = run.query(10)
    holder = _python(f"import time\nfrom activelab.run import Run\nrun = Run.open({str(run.run_dir)!r})\n"
                     "print('open', flush=True)\ntime.sleep(60)\n")
    try:
        assert holder.stdout.readline().strip() == "open"
        run.teach(batch.ids[:5], fashion.labels[batch.ids[:5]])  # the other process holds the run open, not a step
        assert run.pending.ids.tolist() == batch.ids[5:].tolist()
    finally:
        holder.kill()
        holder.wait()
    writer = _python(f"import time\nfrom activelab.runlock import RunLock\nwith RunLock({str(run.run_dir)!r}):\n"
                     "    print('writing', flush=True)\n    time.sleep(60)\n")
    try:
        assert writer.stdout.readline().strip() == "writing"
        before = (run.run_dir / "state.json").read_bytes()
        with pytest.raises(StateError, match=f"in use by another activelab process \\(pid {writer.pid}"):
            run.teach(batch.ids[5:], fashion.labels[batch.ids[5:]])
        assert (run.run_dir / "state.json").read_bytes() == before
    finally:
        writer.kill()
        writer.wait()
    started = time.monotonic()
    run.teach(batch.ids[5:], fashion.labels[batch.ids[5:]])  # the writer's lock died with it
    assert run.pending is None and time.monotonic() - started < 30


@pytest.mark.parametrize("n_train_images, al_iter, expected", [(40, 2, 100), (0, 2, 90), (0, 0, 0), (40, 0, 40)])
def test_the_labelling_budget_counts_a_first_random_batch_only_when_rounds_are_planned(n_train_images, al_iter,
                                                                                        expected):
    from activelab.run import labelling_budget

    config = RunConfig(n_train_images=n_train_images, al_iter=al_iter, al_samples_per_iter=30)
    assert labelling_budget(config) == expected


def test_labels_go_in_while_a_model_trains_and_the_round_keeps_what_it_trained_on(run, fashion):
    from activelab.callbacks import Callback

    extra = run.state.pool_ids[:3]
    other = Run.open(run.run_dir)

    class TeachWhileTraining(Callback):
        """Teaches from another Run object when the trainer asks for its loggers: training has begun."""

        def training_loggers(self, trainer_run, round_index):
            other.teach(extra, fashion.labels[extra], annotator="during")  # refused if fit held the lock
            return []

    trainer = Run.open(run.run_dir, callbacks=[TeachWhileTraining()])
    record = trainer.fit()
    assert record.n_labelled == 40 and trainer.rounds[-1].n_labelled == 40
    assert trainer.state.n_labelled == 43 and trainer.stale   # the model predates the 3 new labels
    assert trainer.history[-1]["annotator"] == "during"


def test_two_people_labelling_one_item_the_last_label_wins_and_both_are_in_the_history(run, fashion):
    item = int(run.state.pool_ids[0])
    first, second = Run.open(run.run_dir), Run.open(run.run_dir)
    first.label([item], [fashion.class_names[0]], annotator="tab1")
    second.label([item], [fashion.class_names[1]], annotator="tab2")
    reopened = Run.open(run.run_dir)
    assert reopened.labelled[item] == fashion.class_names[1]
    assert [(event["op"], event["annotator"]) for event in reopened.history if item in event["ids"]] == [
        ("teach", "tab1"), ("relabel", "tab2")]
    reopened.unlabel([item], annotator="tab1")
    assert item not in Run.open(run.run_dir).labelled and item in reopened.state.pool_ids
