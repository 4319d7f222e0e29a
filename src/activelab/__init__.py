"""activelab: active learning on images, with repeated seeds and runs that survive a crash.

The public entry points are the strategy registry (:mod:`activelab.strategies`), the label ledger
(:class:`activelab.data.state.LabelState`), the dataset sources (:mod:`activelab.data`) and the
resumable round loop (:func:`activelab.loop.run_experiment`).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
