"""The shared pieces of the strategy contract: chunked slices and strategies built from a score."""

from __future__ import annotations

import numpy as np
import pytest

from activelab.errors import ConfigError
from activelab.strategies import base, registry
from activelab.strategies.base import chunk_slices, register_score


def test_chunk_slices_cover_the_pool_within_the_bound():
    slices = list(chunk_slices(1000, 300_000))
    assert [(s.start, s.stop) for s in slices[:2]] == [(0, 13), (13, 26)]
    assert slices[-1].stop >= 1000 and len(slices) == 77
    assert len(list(chunk_slices(3, 10**9))) == 3   # one item per chunk at worst
    assert list(chunk_slices(0, 5)) == []


def test_chunk_slices_follow_the_module_bound(monkeypatch):
    monkeypatch.setattr(base, "CHUNK_ELEMENTS", 10)
    assert [(s.start, s.stop) for s in chunk_slices(7, 3)] == [(0, 3), (3, 6), (6, 9)]


@pytest.fixture
def scratch_registry(monkeypatch):
    """A registry that forgets what a test registers."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def score_shifted(p_wrong_N: np.ndarray, *, shift: float = 0.0) -> np.ndarray:
    """The probability plus ``shift``, refusing a negative shift."""
    if shift < 0:
        raise ConfigError(f"`shift`={shift} must be >= 0.")
    return np.asarray(p_wrong_N, dtype=np.float64) + shift


def test_register_score_is_the_score_then_the_top_n(scratch_registry):
    select = register_score("shifted_test", score_shifted, needs=("p_wrong_N",), family="test",
                            description="highest shifted probability", reference="a test", shift=0.5)
    strategy = registry()["shifted_test"]
    assert strategy.select is select and select.score is score_shifted
    assert strategy.needs == ("p_wrong_N",) and strategy.options == {"shift": 0.5}
    selection = strategy(2, rng=np.random.default_rng(0), p_wrong_N=np.array([0.1, 0.9, 0.4]))
    assert selection.positions.tolist() == [1, 2]
    np.testing.assert_allclose(selection.scores, [1.4, 0.9])                      # default option used
    again = strategy(1, rng=np.random.default_rng(0), p_wrong_N=np.array([0.1, 0.9, 0.4]), shift=2.0)
    np.testing.assert_allclose(again.scores, [2.9])                               # caller's option used
    with pytest.raises(ConfigError, match="shift"):
        strategy(1, rng=np.random.default_rng(0), p_wrong_N=np.array([0.1]), shift=-1.0)


def test_register_score_writes_a_numpydoc_docstring(scratch_registry):
    select = register_score("shifted_doc", score_shifted, needs=("p_wrong_N",), family="test",
                            description="highest shifted probability", reference="A test 2024", shift=0.5)
    doc = select.__doc__
    assert select.__name__ == "select_shifted_doc" and select.__module__ == score_shifted.__module__
    assert doc.startswith("Pick the ``n`` pool items with the highest shifted doc score: highest shifted")
    for part in ("Parameters", "p_wrong_N : numpy.ndarray", "shift : float, default 0.5", "Returns",
                 "References", ".. [1] A test 2024.", f"{score_shifted.__module__}.score_shifted"):
        assert part in doc


def test_register_score_refuses_unknown_inputs_and_second_registrations(scratch_registry):
    with pytest.raises(ValueError, match="unknown strategy inputs"):
        register_score("bad_input", score_shifted, needs=("act_N_L",), family="test", description="x",
                       reference="y")
    with pytest.raises(ValueError, match="registered twice"):
        register_score("margin", score_shifted, needs=("p_wrong_N",), family="test", description="x",
                       reference="y")
