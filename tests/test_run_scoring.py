"""Where a Run scores its pool: on disk by chunks for big pools, and on Ray, with the same selections."""

from __future__ import annotations

import numpy as np
import pytest

import activelab.run as run_module
from activelab.run import SCORES_DIR, Run

SMALL = dict(pool_size=400, n_test=200, n_val=50, n_train_images=30, al_samples_per_iter=10, max_epochs=1,
             mc_samples=4, seed=3, progress=False, min_steps=0, monitor="val_acc")


def _query(tmp_path, name: str, strategy: str, **options) -> Run:
    run = Run.create(tmp_path / name, data="fashion-mnist", model="cnn", strategy=strategy, **SMALL, **options)
    run.query()
    return run


@pytest.mark.parametrize("strategy", ["margin", "bald"])
def test_a_pool_scored_on_disk_selects_what_an_in_memory_pool_does_and_leaves_no_files(
        strategy, tmp_path, fashion, monkeypatch):
    in_memory = _query(tmp_path, "memory", strategy)
    monkeypatch.setattr(run_module, "SCORES_ON_DISK_ABOVE", 100)  # the 400-item pool now goes to disk
    written = []
    original = run_module.score_pool

    def recording(*arguments, cache_dir=None, **options):
        written.append(cache_dir)
        return original(*arguments, cache_dir=cache_dir, chunk_size=128, **options)

    monkeypatch.setattr(run_module, "score_pool", recording)
    on_disk = _query(tmp_path, "disk", strategy)
    assert written == [on_disk.run_dir / SCORES_DIR / "round_000"]
    assert on_disk.pending.ids.tolist() == in_memory.pending.ids.tolist()
    assert np.allclose(on_disk.pending.scores, in_memory.pending.scores, rtol=0, atol=0)
    assert not list((on_disk.run_dir / SCORES_DIR).glob("round_*/*.npy"))  # discarded once the selection is saved


@pytest.mark.slow
def test_a_run_scored_on_ray_selects_what_a_local_run_does(tmp_path, fashion):
    pytest.importorskip("ray.data")
    import ray

    local = _query(tmp_path, "local", "margin")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = _query(tmp_path, "ray", "margin", executor="ray", ray_workers=2)
    finally:
        ray.shutdown()
    assert on_ray.pending.ids.tolist() == local.pending.ids.tolist()
    assert np.allclose(on_ray.pending.scores, local.pending.scores, atol=1e-6)
    assert Run.open(on_ray.run_dir).config.executor == "ray"


def test_a_pool_subset_run_chooses_the_best_of_a_fresh_seeded_subset_each_round(tmp_path, fashion, monkeypatch):
    from activelab.strategies.uncertainty import score_margin

    scored = []
    original = run_module.score_pool

    def recording(model, dataset, pool, *arguments, **options):
        outputs = original(model, dataset, pool, *arguments, **options)
        scored.append((np.asarray(pool).copy(), outputs["probs_N_C"]))
        return outputs

    monkeypatch.setattr(run_module, "score_pool", recording)
    run = _query(tmp_path, "subset", "margin", pool_subset=50)
    pool, probs = scored[-1]
    assert pool.size == 50 and np.isin(pool, run.state.pool_ids).all() and np.unique(pool).size == 50
    best = pool[np.argsort(-score_margin(probs), kind="stable")[:10]]
    assert sorted(run.pending.ids.tolist()) == sorted(best.tolist())  # the top 10 of the 50, no other item

    again = _query(tmp_path, "same-seed", "margin", pool_subset=50)
    assert np.array_equal(scored[-1][0], pool) and again.pending.ids.tolist() == run.pending.ids.tolist()

    pending = run.pending.ids
    run.teach(pending, fashion.labels[pending])
    run.query()
    next_pool = scored[-1][0]
    assert next_pool.size == 50 and not np.isin(pending, next_pool).any()
    assert not np.array_equal(next_pool, pool)  # drawn afresh each round

    narrow = _query(tmp_path, "narrow", "margin", pool_subset=5)  # fewer than a batch: the batch is scored
    assert scored[-1][0].size == 10 and sorted(narrow.pending.ids.tolist()) == scored[-1][0].tolist()
