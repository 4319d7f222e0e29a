"""Every strategy family runs end to end through the loop on a real Fashion-MNIST subset.

One short run per family member that needs a different input (MC samples, embeddings, activations,
gradient embeddings, helper heads): the loop must compute what the strategy declares and label exactly
the requested batch, from the pool only.
"""

from __future__ import annotations

import numpy as np
import pytest

from activelab.config import RunConfig
from activelab.loop import run_experiment
from activelab.strategies import registry

BASE = dict(data_class="fashion-mnist", model_class="cnn", n_train_images=40, al_samples_per_iter=20, al_iter=1,
            max_epochs=5, min_steps=0, n_val=100, n_test=200, pool_size=600, seed=1, mc_samples=4, n_holdout=100,
            progress=False)

FAMILY_MEMBERS = ["bald", "batchbald", "variation_ratios", "power_bald", "mc_margin", "coreset", "badge",
                  "typiclust", "mb_outliers_mean", "outlier", "cluster_outlier_combined",
                  "mb_outliers_mean_entropy", "active_transfer_learning", "dal"]


def test_the_list_covers_every_family():
    families = {strategy.family for strategy in registry().values()}
    covered = {registry()[name].family for name in FAMILY_MEMBERS} | {"baseline", "uncertainty"}
    assert families <= covered


@pytest.mark.parametrize("name", FAMILY_MEMBERS)
def test_strategy_runs_end_to_end(name, tmp_path, fashion):
    state = run_experiment(RunConfig(**BASE, sampling_method=name, out=str(tmp_path)))
    assert [record.n_labelled for record in state.rounds] == [40, 60]
    acquired = state.labelled_ids[40:]
    assert acquired.size == 20 and np.unique(acquired).size == 20
    assert np.isin(acquired, state.train_ids).all()
    assert not np.isin(acquired, np.concatenate([state.test_ids, state.val_ids, state.holdout_ids])).any()
    assert state.rounds[-1].test_accuracy > 0.3  # chance is 0.1
