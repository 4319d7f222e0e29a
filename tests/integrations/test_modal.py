"""activelab strategies as modAL query strategies, run through modAL's own ActiveLearner."""

from __future__ import annotations

import inspect
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import sklearn.utils
import torch
from modAL.models import ActiveLearner, learners
from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from torch import nn

from activelab.errors import BudgetExceededError, ConfigError
from activelab.integrations.modal import (
    BUILT_IN_INPUTS,
    mc_probabilities,
    modal_strategies,
    patch_modal,
    query_strategy,
)
from activelab.mcdropout import ConsistentDropout
from activelab.strategies import registry
from activelab.strategies.bayesian import score_bald

EMBEDDING_STRATEGIES = [name for name in modal_strategies() if "emb_N_D" in registry()[name].needs]
MC_STRATEGIES = ["bald", "mc_entropy", "batchbald"]


@pytest.fixture(scope="module")
def digits():
    """Digits scaled to [0, 1]: 20 labelled (two per class), a pool, and a held-out test set."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order], y[order]
    first = np.concatenate([np.flatnonzero(y == label)[:2] for label in range(10)])
    rest = np.setdiff1d(np.arange(len(y)), first)
    test, pool = rest[:400], rest[400:]
    return SimpleNamespace(X_train=X[first], y_train=y[first], X_pool=X[pool], y_pool=y[pool],
                           X_test=X[test], y_test=y[test])


def logistic_learner(digits, strategy) -> ActiveLearner:
    return ActiveLearner(estimator=LogisticRegression(max_iter=2000), query_strategy=strategy,
                         X_training=digits.X_train, y_training=digits.y_train)


# --- a minimal skorch-like classifier: a fitted torch MLP exposed as `module_` --------------------

class MLP(nn.Module):
    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(32, 10))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.layers(X)


class TorchClassifier:
    """Trains ``module_`` on the whole training set and leaves it in train mode, as skorch does after fit."""

    def __init__(self, dropout: float = 0.3, epochs: int = 30) -> None:
        self.dropout, self.epochs = dropout, epochs

    def fit(self, X: np.ndarray, y: np.ndarray) -> TorchClassifier:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.module_ = MLP(self.dropout)
            optimiser = torch.optim.Adam(self.module_.parameters(), lr=0.01)
            inputs, targets = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.int64)
            self.module_.train()
            for _ in range(self.epochs):
                optimiser.zero_grad()
                nn.functional.cross_entropy(self.module_(inputs), targets).backward()
                optimiser.step()
        return self

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        training = self.module_.training
        self.module_.eval()
        probs = torch.softmax(self.module_(torch.as_tensor(X)), dim=1).numpy()
        self.module_.train(training)
        return probs

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(X) == y).mean())


def torch_learner(digits, strategy) -> ActiveLearner:
    return ActiveLearner(estimator=TorchClassifier(), query_strategy=strategy,
                         X_training=digits.X_train, y_training=digits.y_train)


@pytest.fixture(scope="module")
def fitted_torch_classifier(digits):
    return TorchClassifier().fit(digits.X_train, digits.y_train)


def module_state(module: nn.Module) -> tuple[list[bool], dict[str, torch.Tensor]]:
    return [layer.training for layer in module.modules()], {k: v.clone() for k, v in module.state_dict().items()}


# --- the loop with modAL --------------------------------------------------------------------------

def test_active_learner_with_margin_raises_accuracy(digits):
    learner = logistic_learner(digits, query_strategy("margin", rng=0))
    X_pool, y_pool = digits.X_pool, digits.y_pool
    initial = learner.score(digits.X_test, digits.y_test)
    for _ in range(5):
        indices, items = learner.query(X_pool, n_instances=10)
        assert len(set(indices.tolist())) == 10
        np.testing.assert_array_equal(items, X_pool[indices])
        learner.teach(items, y_pool[indices])
        X_pool, y_pool = np.delete(X_pool, indices, axis=0), np.delete(y_pool, indices)
    assert len(learner.X_training) == 70
    assert learner.score(digits.X_test, digits.y_test) > initial + 0.05


@pytest.mark.parametrize("name, modal_sampling", [
    ("margin", margin_sampling), ("entropy", entropy_sampling), ("least_confidence", uncertainty_sampling),
])
@pytest.mark.parametrize("n_instances", [1, 7])
def test_uncertainty_strategies_match_modal(digits, name, modal_sampling, n_instances):
    learner = logistic_learner(digits, query_strategy(name, rng=0))
    _, ranked = learner.query_strategy(learner, digits.X_pool, n_instances=len(digits.X_pool))
    assert ranked[n_instances - 1] > ranked[n_instances], "the comparison is only meaningful without a tie"
    ours, scores = learner.query_strategy(learner, digits.X_pool, n_instances=n_instances)
    theirs, _ = modal_sampling(learner, digits.X_pool, n_instances=n_instances)
    assert sorted(ours.tolist()) == sorted(theirs.tolist())
    assert np.all(np.diff(scores) <= 0), "most informative first"


def test_query_returns_the_scores_as_modal_metrics(digits):
    learner = logistic_learner(digits, query_strategy("margin", rng=0))
    _, items, scores = learner.query(digits.X_pool, n_instances=3, return_metrics=True)
    probs = np.sort(learner.predict_proba(items), axis=1)
    np.testing.assert_allclose(scores, 1.0 - (probs[:, -1] - probs[:, -2]))


# --- embeddings: the items themselves, or an `embed` callable ---------------------------------------

@pytest.mark.parametrize("name", EMBEDDING_STRATEGIES)
def test_embedding_strategies_run_with_the_items_as_embedding(digits, name):
    learner = logistic_learner(digits, query_strategy(name, rng=0))
    indices, items = learner.query(digits.X_pool, n_instances=5)
    assert len(set(indices.tolist())) == 5 and indices.max() < len(digits.X_pool)
    learner.teach(items, digits.y_pool[indices])


def farthest_from(labelled: np.ndarray, pool: np.ndarray) -> int:
    distances = ((pool[:, None, :] - labelled[None, :, :]) ** 2).sum(axis=2).min(axis=1)
    return int(distances.argmax())


@pytest.mark.parametrize("embed", [None, lambda X: X[:, ::4]])
def test_coreset_starts_from_the_learners_labelled_items(digits, embed):
    learner = logistic_learner(digits, query_strategy("coreset", rng=0, embed=embed))
    first = learner.query(digits.X_pool, n_instances=3)[0][0]
    project = (lambda X: X) if embed is None else embed
    assert first == farthest_from(project(digits.X_train), project(digits.X_pool))


def test_images_are_flattened_into_one_row_each(digits):
    images, labelled = digits.X_pool.reshape(-1, 8, 8), digits.X_train.reshape(-1, 8, 8)
    strategy, flat = query_strategy("coreset", rng=0), query_strategy("coreset", rng=0)
    chosen = strategy(SimpleNamespace(X_training=labelled), images, n_instances=4)[0]
    expected = flat(SimpleNamespace(X_training=digits.X_train), digits.X_pool, n_instances=4)[0]
    np.testing.assert_array_equal(chosen, expected)


def test_no_labelled_items_gives_an_empty_labelled_embedding(digits):
    indices, scores = query_strategy("coreset", rng=0)(object(), digits.X_pool, n_instances=3)
    assert len(set(indices.tolist())) == 3 and np.isnan(scores[0])


# --- MC dropout through a torch module ------------------------------------------------------------

@pytest.mark.parametrize("name", MC_STRATEGIES)
def test_mc_strategies_leave_the_module_as_it_was(digits, name):
    learner = torch_learner(digits, query_strategy(name, rng=0, outputs="logits", mc_samples=8))
    module = learner.estimator.module_
    module.layers[-1].eval()                            # a mix of modes, which must survive the query
    modes, state = module_state(module)
    indices, _ = learner.query(digits.X_pool, n_instances=4)
    assert len(set(indices.tolist())) == 4
    assert module_state(module)[0] == modes
    for key, value in module.state_dict().items():      # BatchNorm running statistics included
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_mc_passes_are_masked_eval_mode_networks(digits, fitted_torch_classifier):
    """Pass t is the eval-mode model (running BatchNorm statistics) with the dropout input times mask t."""
    module = fitted_torch_classifier.module_
    X = digits.X_pool[:50]
    probs = mc_probabilities(module, X, mc_samples=5, outputs="logits", seed=0)
    assert probs.shape == (5, 50, 10)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0)
    assert not np.allclose(probs[0], probs[1]), "each pass is a different network"
    masks, modes = ConsistentDropout(module, n_samples=5, seed=0), module_state(module)[0]
    try:
        module.eval()
        with torch.no_grad():
            hidden = module.layers[:3](torch.as_tensor(X))
            for sample in range(5):
                logits = module.layers[4](hidden * masks.mask(0, sample, hidden.shape[1:]))
                np.testing.assert_allclose(probs[sample], torch.softmax(logits.double(), dim=1).numpy(), atol=1e-6)
    finally:
        for layer, training in zip(module.modules(), modes):
            layer.training = training


def test_mc_probabilities_refuse_a_module_without_dropout_and_a_single_pass(digits, fitted_torch_classifier):
    no_dropout = TorchClassifier(dropout=0.0).fit(digits.X_train, digits.y_train).module_
    with pytest.raises(ConfigError, match="p > 0"):
        mc_probabilities(no_dropout, digits.X_pool[:5], mc_samples=4, outputs="logits", seed=0)
    with_dropout = fitted_torch_classifier.module_
    with pytest.raises(ConfigError, match=re.escape("`mc_samples`=1 must be >= 2")):
        mc_probabilities(with_dropout, digits.X_pool[:5], mc_samples=1, outputs="logits", seed=0)


def test_probability_outputs_are_used_as_they_are(digits):
    module = nn.Sequential(TorchClassifier().fit(digits.X_train, digits.y_train).module_, nn.Softmax(dim=1))
    as_probs = mc_probabilities(module, digits.X_pool[:20], mc_samples=3, outputs="probs", seed=1)
    as_logits = mc_probabilities(module[0], digits.X_pool[:20], mc_samples=3, outputs="logits", seed=1)
    np.testing.assert_allclose(as_probs, as_logits, atol=1e-6)


def test_mc_strategy_with_a_skorch_classifier(digits):
    skorch = pytest.importorskip("skorch")
    net = skorch.NeuralNetClassifier(MLP, criterion=nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=0.01,
                                     max_epochs=20, batch_size=64, train_split=None, verbose=0)
    learner = ActiveLearner(estimator=net, query_strategy=query_strategy("bald", rng=0, outputs="logits"),
                            X_training=digits.X_train, y_training=digits.y_train.astype(np.int64))
    modes, state = module_state(net.module_)
    indices, _ = learner.query(digits.X_pool, n_instances=5)
    assert len(set(indices.tolist())) == 5
    assert module_state(net.module_)[0] == modes
    for key, value in net.module_.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


# --- consistent MC dropout: pass t is one network for the whole pool -------------------------------

COPIES = 10


def pool_with_copies(digits, classifier, n_distinct: int = 100, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The most BALD-informative pool item ten times, spread over the pool, among ``n_distinct`` others.

    The others are the next most informative items after leaving out ``skip`` near rivals of the copied one.
    """
    probs = mc_probabilities(classifier.module_, digits.X_pool, mc_samples=50, outputs="logits", seed=0)
    ranked = np.argsort(-score_bald(probs), kind="stable")
    copied, others = digits.X_pool[ranked[0]], digits.X_pool[ranked[1 + skip:1 + skip + n_distinct]]
    pool = np.concatenate([np.repeat(copied[None], COPIES, axis=0), others])
    order = np.random.default_rng(0).permutation(len(pool))
    return pool[order], np.flatnonzero(order < COPIES)


class Sharpened(nn.Module):
    """Logits times ``factor``: every sampled network is confident, so a pass's label is nearly certain."""

    def __init__(self, module: nn.Module, factor: float) -> None:
        super().__init__()
        self.module, self.factor = module, factor

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.module(X) * self.factor


def test_identical_items_get_identical_bald_scores(digits, fitted_torch_classifier):
    pool, copies = pool_with_copies(digits, fitted_torch_classifier)
    strategy = query_strategy("bald", rng=0, outputs="logits", mc_samples=20, batch_size=16)
    positions, ranked_scores = strategy(SimpleNamespace(estimator=fitted_torch_classifier), pool, n_instances=len(pool))
    scores = np.empty(len(pool))
    scores[positions] = ranked_scores
    assert len(np.unique(copies // 16)) > 3, "the copies fall into several forward batches"
    assert scores[copies].min() > 0.05, "the copied item is uncertain"
    np.testing.assert_allclose(scores[copies], scores[copies[0]], rtol=0, atol=1e-6)


def test_batchbald_never_picks_two_copies_of_one_item(digits, fitted_torch_classifier):
    """Repeated digits (Kirsch et al. 2019, section 4.1): with confident sampled networks a second copy adds
    almost nothing once the first is in the batch, while distinct items still add a lot. The batch stays
    short of the point where ``T`` passes are told apart and every gain falls to zero."""
    classifier = SimpleNamespace(module_=Sharpened(fitted_torch_classifier.module_, factor=10.0))
    pool, copies = pool_with_copies(digits, classifier, skip=100)
    picked_a_copy = 0
    for seed in range(4):
        strategy = query_strategy("batchbald", rng=seed, outputs="logits", mc_samples=50, batch_size=32)
        indices, gains = strategy(classifier, pool, n_instances=4)
        assert np.isin(indices, copies).sum() <= 1, "one copy at most, then distinct items"
        assert gains.min() > 0.05, "every pick still brought information"
        picked_a_copy += bool(np.isin(indices, copies).any())
    assert picked_a_copy >= 2, "the copied item is among the most informative"


def test_mc_probabilities_do_not_depend_on_the_batch_size(digits, fitted_torch_classifier):
    module = fitted_torch_classifier.module_
    whole = mc_probabilities(module, digits.X_pool[:60], mc_samples=4, outputs="logits", seed=5)
    batched = mc_probabilities(module, digits.X_pool[:60], mc_samples=4, outputs="logits", seed=5, batch_size=7)
    np.testing.assert_allclose(batched, whole, rtol=0, atol=1e-6)


def test_mc_strategy_on_a_module_without_dropout_is_refused(digits):
    strategy = query_strategy("bald", rng=0, outputs="logits")
    learner = ActiveLearner(estimator=TorchClassifier(dropout=0.0), query_strategy=strategy,
                            X_training=digits.X_train, y_training=digits.y_train)
    with pytest.raises(ConfigError, match="no nn.Dropout with p > 0") as error:
        learner.query(digits.X_pool, n_instances=3)
    assert str(error.value).count(". ") == 0, "one sentence"


@pytest.mark.parametrize("name", ["bald", "batchbald", "margin"])
def test_a_single_mc_sample_is_refused_when_the_strategy_is_built(name):
    with pytest.raises(ConfigError, match=re.escape("`mc_samples`=1 must be >= 2")) as error:
        query_strategy(name, outputs="logits", mc_samples=1)
    assert str(error.value).count(". ") == 0, "one sentence"


# --- modAL's own loop: ActiveLearner.query then teach, several rounds ---------------------------------

def test_importing_the_integration_patches_modal():
    """Importing the integration is all a user needs for modAL 0.4.2.1's teach under scikit-learn >= 1.8."""
    if "force_all_finite" in inspect.signature(sklearn.utils.check_X_y).parameters:
        pytest.skip("this scikit-learn still accepts force_all_finite; modAL needs no patch")
    assert getattr(learners.check_X_y, "_activelab_translates_force_all_finite", False)


def test_patch_modal_is_idempotent():
    check = learners.check_X_y
    assert patch_modal() == patch_modal()
    assert learners.check_X_y is check


def test_patched_check_keeps_modals_finite_requirement(digits):
    X = digits.X_train.copy()
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        learners.check_X_y(X, digits.y_train, allow_nd=True, force_all_finite=True)
    learners.check_X_y(X, digits.y_train, allow_nd=True, force_all_finite=False)
    learner = logistic_learner(digits, query_strategy("margin", rng=0))
    with pytest.raises(ValueError, match="NaN"):
        learner.teach(X[:2], digits.y_train[:2])
    assert len(learner.X_training) == len(digits.X_train), "nothing was taught"


def test_patch_modal_leaves_a_check_that_accepts_force_all_finite(monkeypatch):
    def old_check_X_y(X, y, *, force_all_finite=True, **kwargs):
        return X, y

    monkeypatch.setattr(learners, "check_X_y", old_check_X_y)
    assert patch_modal() is False
    assert learners.check_X_y is old_check_X_y


def test_patch_modal_without_modal_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "modAL.models", None)
    assert patch_modal() is False


@pytest.mark.parametrize("name", ["margin", "entropy", "coreset", "random"])
def test_modal_loop_with_a_scikit_learn_estimator(digits, name):
    learner = ActiveLearner(estimator=LogisticRegression(max_iter=2000), query_strategy=query_strategy(name, rng=0),
                            X_training=digits.X_train, y_training=digits.y_train)
    X_pool, y_pool = digits.X_pool, digits.y_pool
    for _ in range(3):
        indices, items = learner.query(X_pool, n_instances=5)
        learner.teach(items, y_pool[indices])
        X_pool, y_pool = np.delete(X_pool, indices, axis=0), np.delete(y_pool, indices)
    assert len(learner.X_training) == len(digits.X_train) + 15
    learner.fit(digits.X_train, digits.y_train)         # modAL's fit validates its data the same way
    assert len(learner.X_training) == len(digits.X_train)


@pytest.mark.parametrize("name", ["bald", "batchbald"])
def test_modal_loop_with_a_torch_estimator(digits, name):
    learner = torch_learner(digits, query_strategy(name, rng=0, outputs="logits", mc_samples=8))
    X_pool, y_pool = digits.X_pool, digits.y_pool
    for _ in range(3):
        indices, items = learner.query(X_pool, n_instances=4)
        assert len(set(indices.tolist())) == 4
        learner.teach(items, y_pool[indices])
        X_pool, y_pool = np.delete(X_pool, indices, axis=0), np.delete(y_pool, indices)
    assert len(learner.X_training) == len(digits.X_train) + 12
    assert learner.estimator.module_.training, "the module is left in the mode fit left it in"


# --- reproducibility -------------------------------------------------------------------------------

def query_sequence(digits, name: str, seed: int, learner_factory=logistic_learner, **options) -> list[list[int]]:
    learner = learner_factory(digits, query_strategy(name, rng=seed, **options))
    X_pool, y_pool, chosen = digits.X_pool, digits.y_pool, []
    for _ in range(3):
        indices, items = learner.query(X_pool, n_instances=5)
        learner.teach(items, y_pool[indices])
        X_pool, y_pool = np.delete(X_pool, indices, axis=0), np.delete(y_pool, indices)
        chosen.append(indices.tolist())
    return chosen


@pytest.mark.parametrize("name", ["random", "power_margin", "typiclust"])
def test_same_seed_same_queries(digits, name):
    global_state = np.random.get_state()[1].copy()
    first = query_sequence(digits, name, seed=7)
    assert query_sequence(digits, name, seed=7) == first
    assert query_sequence(digits, name, seed=8) != first
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)


def test_same_seed_same_dropout_masks(digits):
    torch_state = torch.random.get_rng_state()
    first = query_sequence(digits, "power_bald", 3, torch_learner, outputs="logits", mc_samples=4)
    assert query_sequence(digits, "power_bald", 3, torch_learner, outputs="logits", mc_samples=4) == first
    assert torch.equal(torch.random.get_rng_state(), torch_state)


# --- what modAL cannot run, and bad arguments ------------------------------------------------------

def test_modal_strategies_are_those_with_built_in_inputs():
    names = modal_strategies()
    assert {"margin", "entropy", "bald", "batchbald", "coreset", "typiclust", "random"} <= set(names)
    assert not {"badge", "dal", "active_transfer_learning", "mb_outliers_max"} & set(names)
    assert all(set(registry()[name].needs) <= set(BUILT_IN_INPUTS) for name in names)


@pytest.mark.parametrize("name", sorted(set(registry()) - set(modal_strategies())))
def test_strategies_modal_cannot_feed_are_refused_when_built(name):
    missing = [need for need in registry()[name].needs if need not in BUILT_IN_INPUTS]
    with pytest.raises(ConfigError, match=f"needs {missing[0]}.*cannot provide") as error:
        query_strategy(name)
    assert str(error.value).count(". ") == 0, "one sentence"


def test_a_compute_callable_supplies_a_missing_input(digits):
    strategy = query_strategy("badge", rng=0, compute={"grad_emb_N_D": lambda X: X * 2.0})
    learner = logistic_learner(digits, strategy)
    indices, _ = learner.query(digits.X_pool, n_instances=4)
    assert len(set(indices.tolist())) == 4


@pytest.mark.parametrize("arguments, message", [
    ({"name": "bald"}, "outputs='logits'"),
    ({"name": "bald", "outputs": "log_probs"}, "`outputs`='log_probs'"),
    ({"name": "margin", "beta": 2.0}, "has no option 'beta'; its options are: none"),
    ({"name": "power_margin", "temperature": 2.0}, "its options are: beta"),
    ({"name": "margin", "compute": {"probs_N_C": np.ones}}, "`compute` key 'probs_N_C'"),
    ({"name": "badge", "compute": {"grad_emb_N_D": 3}}, "must be a callable"),
    ({"name": "coreset", "embed": "pixels"}, "`embed` must be a callable"),
    ({"name": "margin", "mc_samples": 0}, "`mc_samples`=0 must be >= 2"),
    ({"name": "margin", "rng": 1.5}, "`rng`=1.5 must be an integer"),
    ({"name": "no_such_strategy"}, "unknown sampling method"),
])
def test_bad_arguments_raise_config_errors(arguments, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        query_strategy(**arguments)


def test_mc_strategy_on_an_estimator_without_a_torch_module(digits):
    learner = logistic_learner(digits, query_strategy("bald", rng=0, outputs="logits"))
    with pytest.raises(ConfigError, match="LogisticRegression has no fitted torch `module_`"):
        learner.query(digits.X_pool)


def test_more_instances_than_the_pool_holds(digits):
    learner = logistic_learner(digits, query_strategy("margin", rng=0))
    with pytest.raises(BudgetExceededError, match="`n_instances`=11 must be <= pool size 10"):
        learner.query(digits.X_pool[:10], n_instances=11)
