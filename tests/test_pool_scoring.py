"""Pool scoring by chunks: memory-mapped outputs equal one in-memory pass, a killed scoring resumes from its
finished chunks, memory follows the chunk and not the pool, and Ray workers give the same arrays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest
import torch

from activelab import pool_scoring
from activelab.data.base import ArrayDataset
from activelab.errors import ConfigError
from activelab.inference import POOL_OUTPUTS, pool_outputs
from activelab.models import build_model
from activelab.pool_scoring import DONE, ModelRecipe, score_pool
from activelab.threads import threads_per_worker
from activelab.strategies import get_strategy, registry

SHAPE = (1, 12, 12)
OPTIONS = dict(mc_samples=3, seed=5, batch_size=32)


def toy_dataset(n: int = 700, size: int = 12, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    return ArrayDataset("toy", images, rng.integers(0, 3, n), ("a", "b", "c"), mean=(0.5,), std=(0.25,), scale=1 / 255)


def toy_model(seed: int = 0, shape=SHAPE):
    torch.manual_seed(seed)
    return build_model("cnn", shape, 3).eval()


def shuffled_positions(n: int, seed: int = 1) -> np.ndarray:
    """A shuffled pool with a repeated item, as the scoring functions must allow."""
    positions = np.random.default_rng(seed).permutation(n)
    return np.concatenate([positions, positions[:3]])


class CountingScorer:
    """Wraps pool_outputs and counts the items it was asked to score."""

    def __init__(self):
        self.items = 0

    def __call__(self, model, dataset, positions, wanted, **options):
        self.items += len(positions)
        return pool_outputs(model, dataset, positions, wanted, **options)


def test_memory_mapped_outputs_equal_one_in_memory_pass_for_every_output(tmp_path, monkeypatch):
    dataset, model = toy_dataset(), toy_model()
    positions = shuffled_positions(len(dataset))
    reference = pool_outputs(model, dataset, positions, set(POOL_OUTPUTS), **OPTIONS)
    counter = CountingScorer()
    monkeypatch.setattr(pool_scoring, "pool_outputs", counter)
    # 100 is rounded up to 128 = 4 batches of 32, so every batch holds the items of the single pass
    cached = score_pool(model, dataset, positions, set(POOL_OUTPUTS), cache_dir=tmp_path, chunk_size=100, **OPTIONS)
    assert counter.items == positions.size
    assert sorted(cached) == sorted(reference)
    for name in POOL_OUTPUTS:
        assert isinstance(cached[name], np.memmap) and not cached[name].flags.writeable
        assert cached[name].dtype == reference[name].dtype and cached[name].shape == reference[name].shape
        assert np.array_equal(cached[name], reference[name]), name
    assert sorted(p.name for p in (tmp_path / DONE).iterdir()) == [f"{c:06d}.json" for c in range(6)]  # 703 / 128

    again = score_pool(model, dataset, positions, set(POOL_OUTPUTS), cache_dir=tmp_path, chunk_size=100, **OPTIONS)
    assert counter.items == positions.size  # every chunk was done: nothing scored twice
    assert all(np.array_equal(again[name], reference[name]) for name in POOL_OUTPUTS)


def test_every_strategy_selects_the_same_items_from_memory_maps(tmp_path):
    """Strategies read the read-only memory maps as they read arrays: same picks, nothing written to them."""
    dataset, model = toy_dataset(300), toy_model()
    pool, labelled = np.arange(40, 300), np.arange(40)
    in_memory = pool_outputs(model, dataset, pool, set(POOL_OUTPUTS), **OPTIONS)
    mapped = score_pool(model, dataset, pool, set(POOL_OUTPUTS), cache_dir=tmp_path, chunk_size=64, **OPTIONS)
    rng = np.random.default_rng(3)
    extra = {"labelled_emb_M_D": pool_outputs(model, dataset, labelled, {"emb_N_D"}, **OPTIONS)["emb_N_D"],
             "p_wrong_N": rng.random(pool.size), "p_unlabelled_N": rng.random(pool.size)}
    for name in registry():
        strategy = get_strategy(name)
        picks = [strategy(12, rng=np.random.default_rng(0), n_pool=pool.size,
                          **{need: {**extra, **outputs}[need] for need in strategy.needs}).positions
                 for outputs in (in_memory, mapped)]
        assert np.array_equal(picks[0], picks[1]), name


def test_a_cache_folder_of_another_job_is_cleared_and_scored_afresh(tmp_path):
    dataset, model = toy_dataset(300), toy_model()
    first = np.arange(0, 300, 2)
    score_pool(model, dataset, first, {"probs_N_C", "emb_N_D"}, cache_dir=tmp_path, chunk_size=64, **OPTIONS)
    other_pool = np.arange(1, 300, 2)
    got = score_pool(model, dataset, other_pool, {"probs_N_C"}, cache_dir=tmp_path, chunk_size=64, **OPTIONS)
    assert np.array_equal(got["probs_N_C"], pool_outputs(model, dataset, other_pool, {"probs_N_C"}, **OPTIONS)["probs_N_C"])
    assert not (tmp_path / "emb_N_D.npy").exists()
    retrained = toy_model(seed=1)
    got = score_pool(retrained, dataset, other_pool, {"probs_N_C"}, cache_dir=tmp_path, chunk_size=64, **OPTIONS)
    expected = pool_outputs(retrained, dataset, other_pool, {"probs_N_C"}, **OPTIONS)["probs_N_C"]
    assert np.array_equal(got["probs_N_C"], expected)
    pool_scoring.discard_cache(tmp_path)
    assert not tmp_path.exists()


def test_an_empty_pool_gives_the_empty_arrays_of_pool_outputs(tmp_path):
    dataset, model = toy_dataset(50), toy_model()
    got = score_pool(model, dataset, np.array([], dtype=np.int64), set(POOL_OUTPUTS), cache_dir=tmp_path, **OPTIONS)
    expected = pool_outputs(model, dataset, np.array([], dtype=np.int64), set(POOL_OUTPUTS), **OPTIONS)
    assert {name: got[name].shape for name in got} == {name: expected[name].shape for name in expected}


_KILLED_SCORING = """
import sys
import numpy as np, torch
from activelab.data.base import ArrayDataset
from activelab.models import build_model
from activelab.pool_scoring import score_pool
folder = sys.argv[1]
data = np.load(folder + "/data.npz")
dataset = ArrayDataset("toy", data["images"], data["labels"], ("a", "b", "c"), mean=(0.5,), std=(0.25,), scale=1 / 255)
model = build_model("cnn", (1, 12, 12), 3)
model.load_state_dict(torch.load(folder + "/model.pt"))
score_pool(model.eval(), dataset, data["positions"], {"probs_N_C", "probs_T_N_C", "emb_N_D"}, cache_dir=folder + "/cache",
           chunk_size=64, mc_samples=3, seed=5, batch_size=32)
"""


def test_scoring_killed_mid_chunk_resumes_from_the_finished_chunks(tmp_path, monkeypatch):
    dataset, model = toy_dataset(400), toy_model()
    positions = shuffled_positions(len(dataset))
    images = np.stack([dataset._images[i] for i in range(len(dataset))])
    np.savez(tmp_path / "data.npz", images=images, labels=dataset.labels, positions=positions)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    environment = {**os.environ, "ACTIVELAB_KILL_AT": "score-batch:7"}  # chunks of 2 batches: 3 done, 1 begun
    killed = subprocess.run([sys.executable, "-c", _KILLED_SCORING, str(tmp_path)], env=environment,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in (tmp_path / "cache" / DONE).iterdir()) == ["000000.json", "000001.json", "000002.json"]

    wanted = {"probs_N_C", "probs_T_N_C", "emb_N_D"}
    counter = CountingScorer()
    monkeypatch.setattr(pool_scoring, "pool_outputs", counter)
    resumed = score_pool(model, dataset, positions, wanted, cache_dir=tmp_path / "cache", chunk_size=64, **OPTIONS)
    assert counter.items == positions.size - 3 * 64
    reference = pool_outputs(model, dataset, positions, wanted, **OPTIONS)
    for name in wanted:
        assert np.array_equal(resumed[name], reference[name]), name


def test_peak_memory_follows_the_chunk_not_the_pool(tmp_path):
    dataset, model = toy_dataset(16_000, size=8), toy_model(shape=(1, 8, 8))
    positions, wanted = np.arange(len(dataset)), {"probs_N_C", "emb_N_D", "probs_T_N_C"}
    options = dict(mc_samples=4, seed=0, batch_size=256)
    pool_bytes = positions.size * (3 + 128 + 4 * 3) * 4  # what the outputs of the whole pool take

    def peak(score) -> int:
        tracemalloc.start()
        try:
            score()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    in_memory = peak(lambda: pool_outputs(model, dataset, positions, wanted, **options))
    chunked = peak(lambda: score_pool(model, dataset, positions, wanted, cache_dir=tmp_path, chunk_size=1024, **options))
    assert in_memory > pool_bytes  # the measure sees the outputs
    assert chunked < pool_bytes / 4  # 16 chunks: a few chunks' worth at most


def test_thread_counts_share_the_cores_among_the_workers():
    assert [threads_per_worker(2, workers) for workers in (1, 2, 3)] == [2, 1, 1]
    assert threads_per_worker(8, 3) == 2 and threads_per_worker(16, 4) == 4


def test_bad_arguments_end_in_one_sentence():
    dataset, model = toy_dataset(10), toy_model()
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        score_pool(model, dataset, np.arange(10), {"probs_N_C"}, executor="dask")
    with pytest.raises(ConfigError, match="needs the Ray executor"):
        score_pool(model, dataset, np.arange(10), {"probs_N_C"}, ray_address="auto")
    with pytest.raises(ConfigError, match="`workers`=0"):
        score_pool(model, dataset, np.arange(10), {"probs_N_C"}, executor="ray", workers=0)
    with pytest.raises(ConfigError, match="`chunk_size`=0"):
        score_pool(model, dataset, np.arange(10), {"probs_N_C"}, chunk_size=0)


def test_ray_missing_is_one_sentence_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    recipe = ModelRecipe(SHAPE, 3, name="cnn")
    with pytest.raises(ConfigError, match=r"pip install 'activelab\[ray\]'"):
        score_pool(toy_model(), toy_dataset(10), np.arange(10), {"probs_N_C"}, executor="ray", recipe=recipe)


def test_a_factory_that_cannot_be_sent_to_workers_is_refused():
    pytest.importorskip("ray")
    lock = threading.Lock()
    recipe = ModelRecipe(SHAPE, 3, factory=lambda: lock and torch.nn.Flatten())
    with pytest.raises(ConfigError, match="cannot be sent to Ray workers"):
        score_pool(toy_model(), toy_dataset(10), np.arange(10), {"probs_N_C"}, executor="ray", recipe=recipe)


def test_a_recipe_rebuilds_the_architecture_and_wraps_a_bare_backbone():
    model = toy_model()
    named = ModelRecipe(SHAPE, 3, name="cnn").build()
    named.load_state_dict(model.state_dict())
    assert pool_scoring.state_digest(named) == pool_scoring.state_digest(model)
    wrapped = ModelRecipe(SHAPE, 3, factory=_flat_backbone).build()
    assert wrapped(torch.zeros(2, *SHAPE)).shape == (2, 3)
    with pytest.raises(ValueError):
        ModelRecipe(SHAPE, 3)


def _flat_backbone():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as many as one worker alone gets: the same BLAS reductions, the same bits
    yield ray
    torch.set_num_threads(threads)
    ray.shutdown()


@pytest.mark.slow
def test_one_ray_worker_scores_bit_for_bit_as_this_process_into_memory_maps(local_ray, tmp_path):
    dataset, positions = toy_dataset(900), shuffled_positions(900)
    recipe = ModelRecipe(SHAPE, 3, factory=_flat_backbone)  # travels with this module's code
    model = recipe.build().eval()
    expected = pool_outputs(model, dataset, positions, set(POOL_OUTPUTS), **OPTIONS)
    cached = score_pool(model, dataset, positions, set(POOL_OUTPUTS), executor="ray", workers=1, recipe=recipe,
                        cache_dir=tmp_path, chunk_size=256, **OPTIONS)
    for name in POOL_OUTPUTS:  # one worker with the driver's 2 threads: the same sums, the same bits
        assert isinstance(cached[name], np.memmap) and np.array_equal(cached[name], expected[name]), name
    assert len(list((tmp_path / DONE).iterdir())) == 4  # 903 items in chunks of 256


@pytest.mark.slow
def test_two_ray_workers_select_the_same_items_as_this_process(local_ray):
    dataset, model, positions = toy_dataset(900), toy_model(), shuffled_positions(900)
    reference = pool_outputs(model, dataset, positions, set(POOL_OUTPUTS), **OPTIONS)
    two = score_pool(model, dataset, positions, set(POOL_OUTPUTS), executor="ray", workers=2,
                     recipe=ModelRecipe(SHAPE, 3, name="cnn"), chunk_size=128, **OPTIONS)
    for name in POOL_OUTPUTS:  # one thread each: BLAS sums split differently, last-bit differences only
        assert two[name].dtype == reference[name].dtype
        np.testing.assert_allclose(two[name], reference[name], rtol=1e-5, atol=1e-6, err_msg=name)
    for strategy in ("margin", "entropy", "bald", "mean_std"):
        needs = get_strategy(strategy).needs
        chosen = [get_strategy(strategy)(60, rng=np.random.default_rng(0), **{need: outputs[need] for need in needs})
                  for outputs in (reference, two)]
        assert np.array_equal(chosen[0].positions, chosen[1].positions), strategy


class UnimportableDataset(ArrayDataset):
    """A dataset class the workers cannot import (this test module is not on their path)."""


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_dataset_ends_in_one_sentence(local_ray):
    base = toy_dataset(64)
    dataset = UnimportableDataset("toy", base._images, base.labels, base.class_names)
    with pytest.raises(ConfigError, match="a Ray worker could not load the model or the dataset") as raised:
        score_pool(toy_model(), dataset, np.arange(64), {"probs_N_C"}, executor="ray", workers=1,
                   recipe=ModelRecipe(SHAPE, 3, name="cnn"), **OPTIONS)
    assert "ModuleNotFoundError" in str(raised.value) and "\n" not in str(raised.value)
