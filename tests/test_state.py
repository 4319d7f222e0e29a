"""The label ledger: disjoint, seed-stable splits; round trips; refusal of corrupt or foreign files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activelab.data.base import UNLABELLED
from activelab.data.state import LabelState
from activelab.errors import BudgetExceededError, ConfigError, StateError
from activelab.records import RoundRecord

LABELS = np.arange(500) % 5


def make_state(seed=0, **kwargs):
    options = dict(n_val=50, n_test=100, n_holdout=20)
    options.update(kwargs)
    return LabelState.create(LABELS, seed=seed, dataset_fingerprint="fp", **options)


def test_splits_are_disjoint_cover_everything_and_have_the_asked_sizes():
    state = make_state()
    parts = [state.train_ids, state.val_ids, state.test_ids, state.holdout_ids]
    assert [part.size for part in parts] == [330, 50, 100, 20]
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size == 500


def test_splits_are_stable_for_a_seed_and_differ_between_seeds():
    assert np.array_equal(make_state(3).test_ids, make_state(3).test_ids)
    assert np.array_equal(make_state(3).val_ids, make_state(3).val_ids)
    assert not np.array_equal(make_state(3).test_ids, make_state(4).test_ids)


def test_predefined_test_split_is_used_and_subsampled():
    test_mask = np.zeros(500, bool)
    test_mask[400:] = True
    state = LabelState.create(LABELS, seed=0, predefined_test=test_mask, n_val=10, n_test=30)
    assert state.test_ids.size == 30 and state.test_ids.min() >= 400
    assert state.train_ids.max() < 400 and state.val_ids.max() < 400


def test_unlabelled_items_only_go_to_the_pool():
    labels = LABELS.copy()
    labels[::2] = UNLABELLED
    state = LabelState.create(labels, seed=0, n_val=20, n_test=30)
    assert (labels[state.val_ids] != UNLABELLED).all() and (labels[state.test_ids] != UNLABELLED).all()


def test_pool_size_subsamples_the_pool():
    assert make_state(pool_size=100).train_ids.size == 100


def test_add_moves_ids_from_pool_to_labelled_and_refuses_bad_ids():
    state = make_state()
    ids = state.pool_ids[:3]
    state.add(ids, LABELS[ids], 1)
    assert state.n_labelled == 3 and not np.isin(ids, state.pool_ids).any()
    assert state.labelled_rounds.tolist() == [1, 1, 1]
    with pytest.raises(ConfigError, match="not in the unlabelled pool"):
        state.add(ids[:1], LABELS[ids[:1]], 2)
    with pytest.raises(ConfigError, match="not in the unlabelled pool"):
        state.add(state.test_ids[:1], LABELS[state.test_ids[:1]], 2)
    with pytest.raises(ConfigError, match="twice"):
        state.add(np.repeat(state.pool_ids[:1], 2), np.zeros(2, int), 2)
    with pytest.raises(ConfigError, match="labels"):
        state.add(state.pool_ids[:2], np.zeros(3, int), 2)


def test_sizes_larger_than_available_are_refused():
    with pytest.raises(BudgetExceededError, match="test set needs 600"):
        make_state(n_test=600)
    with pytest.raises(BudgetExceededError, match="n_train_images"):
        make_state().acquire_initial_ids(10_000)


def test_save_load_round_trip(tmp_path):
    state = make_state()
    state.add(state.acquire_initial_ids(10), LABELS[state.acquire_initial_ids(10)], 0)
    state.rounds.append(RoundRecord(0, 10, test_accuracy=0.5))
    state.pending = {"round": 0, "ids": [1, 2]}
    state.save(tmp_path / "state.json")
    loaded = LabelState.load(tmp_path / "state.json")
    assert loaded.to_dict() == state.to_dict()
    assert loaded.rounds == state.rounds


def test_corrupt_or_foreign_files_are_refused_and_left_untouched(tmp_path):
    path = tmp_path / "state.json"
    make_state().save(path)
    document = json.loads(path.read_text())
    document["state"]["labelled_ids"] = [1, 2, 3]
    path.write_text(json.dumps(document))
    before = path.read_bytes()
    with pytest.raises(StateError, match="checksum"):
        LabelState.load(path)
    assert path.read_bytes() == before
    path.write_text('{"format": "something else"}')
    with pytest.raises(StateError, match="not an activelab label-state file"):
        LabelState.load(path)
    path.write_text("{truncated")
    with pytest.raises(StateError, match="not a readable"):
        LabelState.load(path)
    document["version"] = 99
    path.write_text(json.dumps(document))
    with pytest.raises(StateError, match="version 99"):
        LabelState.load(path)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), batches=st.lists(st.integers(1, 40), max_size=6))
def test_any_sequence_of_adds_keeps_the_ledger_consistent(tmp_path_factory, seed, batches):
    path = tmp_path_factory.mktemp("ledger") / "state.json"
    state = make_state(seed)
    rng = np.random.default_rng(seed)
    total = 0
    for round_index, size in enumerate(batches, start=1):
        pool = state.pool_ids
        ids = rng.choice(pool, size=min(size, pool.size), replace=False)
        state.add(ids, LABELS[ids], round_index)
        total += ids.size
        state.save(path)
        state = LabelState.load(path)
        assert state.n_labelled == total
        assert state.pool_ids.size + total == state.train_ids.size
        assert not np.isin(state.labelled_ids, state.test_ids).any()
        assert not np.isin(state.labelled_ids, state.val_ids).any()
        assert np.array_equal(LABELS[state.labelled_ids], state.labelled_labels)


def test_every_strategy_starts_from_the_same_splits_and_initial_labels_for_a_seed(tmp_path, fashion):
    """Comparisons between strategies are paired: only the strategy differs between runs with one seed."""
    from activelab.run import Run
    from activelab.strategies import registry

    seen = {}
    for name in registry():
        state = Run.create(tmp_path / name, data="fashion-mnist", strategy=name, n_train_images=50, n_val=200,
                           n_test=300, seed=7, progress=False).state
        parts = (state.test_ids, state.val_ids, state.holdout_ids, state.train_ids, state.labelled_ids)
        seen[name] = [part.tolist() for part in parts]
    reference = seen.pop("random")
    assert len(reference[2]) >= 2  # the holdout that active transfer learning trains its head on
    for name, parts in seen.items():
        assert parts == reference, name


def test_balanced_initial_labels_take_the_same_number_from_every_class():
    labels = np.repeat(np.arange(4), 50)
    state = LabelState.create(labels, seed=3, n_val=20, n_test=20, n_holdout=0)
    initial = state.acquire_initial_ids(10, labels, balanced=True)
    counts = np.bincount(labels[initial], minlength=4)
    assert sorted(counts.tolist()) == [2, 2, 3, 3] and initial.size == np.unique(initial).size
    assert np.isin(initial, state.pool_ids).all()
    assert np.array_equal(initial, state.acquire_initial_ids(10, labels, balanced=True))
    with pytest.raises(BudgetExceededError, match="class-balanced"):
        state.acquire_initial_ids(4 * 39 + 1, np.where(labels == 0, 4, labels), balanced=True)


# ------------------------------------------------------------------ a growing dataset (the labelling app)


def test_an_appendable_ledger_gives_new_items_the_next_ids_in_the_pool(tmp_path):
    state = LabelState.create_appendable(0, seed=3, dataset_fingerprint="fp0")
    assert state.pool_ids.size == 0 and state.test_ids.size == 0 and state.val_ids.size == 0
    assert state.append_items(30, "fp30").tolist() == list(range(30))
    state.add(np.array([4, 7]), np.array([1, 0]), 0)
    assert state.append_items(45, "fp45").tolist() == list(range(30, 45))
    assert state.pool_ids.tolist() == [item for item in range(45) if item not in (4, 7)]
    assert (state.n_items, state.dataset_fingerprint) == (45, "fp45")
    state.save(tmp_path / "state.json")
    again = LabelState.load(tmp_path / "state.json")
    assert again.n_items == 45 and again.test_labels.tolist() == [] and again.pool_ids.tolist() == state.pool_ids.tolist()
    with pytest.raises(StateError, match="items were removed"):
        state.append_items(40, "fp40")
    with pytest.raises(StateError, match="fixed size"):
        make_state().append_items(600, "fp")


def test_a_fixed_ledger_is_saved_without_the_appendable_fields(tmp_path):
    state = make_state()
    assert "n_items" not in state.to_dict() and "test_labels" not in state.to_dict()
    state.save(tmp_path / "state.json")
    assert LabelState.load(tmp_path / "state.json").test_labels is None


def test_test_items_are_drawn_at_random_from_free_pool_items_and_labelled_by_a_person():
    state = LabelState.create_appendable(100, seed=5, dataset_fingerprint="fp")
    state.add(np.arange(10), np.arange(10) % 3, 0)
    state.pending = {"round": -1, "strategy": "random", "ids": [10, 11, 12], "scores": [None] * 3}
    twin = LabelState.from_dict(state.to_dict())
    chosen = state.draw_test(20, -1, annotator="ada")
    assert chosen.tolist() == twin.draw_test(20, -1).tolist()  # seeded by the ledger alone
    assert not np.isin(chosen, np.arange(13)).any()             # never labelled or pending items
    assert not np.isin(chosen, state.pool_ids).any() and state.test_ids.tolist() == sorted(chosen.tolist())
    assert (state.test_labels == UNLABELLED).all()
    state.label_test(chosen[:2], np.array([2, 1]), -1, annotator="ada")
    state.label_test(chosen[:1], np.array([0]), -1, annotator="bo")  # a later label wins
    ids, labels = state.labelled_test
    assert dict(zip(ids.tolist(), labels.tolist())) == {int(chosen[0]): 0, int(chosen[1]): 1}
    assert state.events[-1]["previous"] == [2] and state.events[-1]["annotator"] == "bo"
    state.unlabel_test(chosen[1:2], -1)
    assert state.labelled_test[0].tolist() == [int(chosen[0])] and state.events[-1]["op"] == "remove-test"
    more = state.draw_test(5, -1)
    assert not np.isin(more, chosen).any() and state.test_ids.size == 25
    with pytest.raises(ConfigError, match="not in the test set"):
        state.label_test(np.array([0]), np.array([1]), -1)
    with pytest.raises(BudgetExceededError, match="only"):
        state.draw_test(1000, -1)
    with pytest.raises(ConfigError, match="comes from its dataset"):
        make_state().draw_test(1, -1)
