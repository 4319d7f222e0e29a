"""activelab: active learning on images, with repeated seeds and runs that survive a crash.

The public entry points are :class:`activelab.Run` (a run's steps: query, teach, skip, fit, evaluate),
the strategy registry (:mod:`activelab.strategies`), the dataset sources (:mod:`activelab.data`) and the
simulated experiment loop (:func:`activelab.loop.run_experiment`).
"""

__version__ = "0.1.0"
__all__ = ["Run", "__version__"]


def __getattr__(name: str):
    """``activelab.Run`` without importing torch when only the version or the CLI's parser is needed."""
    if name == "Run":
        from activelab.run import Run

        return Run
    raise AttributeError(f"module 'activelab' has no attribute {name!r}")
