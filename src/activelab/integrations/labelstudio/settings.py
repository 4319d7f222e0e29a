"""The backend's settings: which model, which strategy, how images are read and how training runs.

Kept apart from the modules that import torch, so that building the command's parser stays fast; the
checks that need the strategy registry or the model zoo import them when a :class:`BackendSettings` is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from activelab.errors import ConfigError
from activelab.validation import check_float, check_int

if TYPE_CHECKING:
    from activelab.strategies import Strategy
    from activelab.training import TrainSettings

#: Strategy inputs the backend computes for a batch of tasks; each item's score depends on that item only.
SCORING_INPUTS = ("probs_N_C", "probs_T_N_C")


def scoring_strategies() -> list[str]:
    """Strategies that score each task on its own from the model's (MC) probabilities.

    Label Studio asks for predictions a few tasks at a time, often one, so a score must not depend on the
    other tasks of the request: batch-aware, diversity and pool-standardised strategies are left out.
    """
    from activelab.strategies import registry

    return sorted(name for name, strategy in registry().items()
                  if getattr(strategy.select, "score", None) is not None and strategy.needs
                  and set(strategy.needs) <= set(SCORING_INPUTS))


def scoring_strategy(name: str) -> Strategy:
    """The registered strategy ``name`` after checking that it scores each task on its own."""
    from activelab.strategies import get_strategy

    strategy = get_strategy(name)
    if strategy.name not in scoring_strategies():
        raise ConfigError(f"strategy '{strategy.name}' does not score each task on its own, which Label Studio "
                          f"needs; choose one of: {', '.join(scoring_strategies())}.")
    return strategy


@dataclass(frozen=True)
class BackendSettings:
    """How the backend's models are built, trained and scored (the command's flags)."""

    model: str = "cnn"
    strategy: str = "margin"
    image_size: int = 28
    grayscale: bool = False
    max_epochs: int = 20
    min_steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    mc_samples: int = 10
    min_labels: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(self.image_size, "image_size", minimum=8, maximum=1024)
        check_int(self.max_epochs, "max_epochs", minimum=1)
        check_int(self.min_steps, "min_steps", minimum=0)
        check_int(self.batch_size, "batch_size", minimum=2)
        check_float(self.lr, "lr", minimum=0.0, exclusive_minimum=True)
        check_int(self.mc_samples, "mc_samples", minimum=2)
        check_int(self.min_labels, "min_labels", minimum=2)
        check_int(self.seed, "seed", minimum=0)
        from activelab.models import check_model

        object.__setattr__(self, "strategy", scoring_strategy(self.strategy).name)
        object.__setattr__(self, "model", check_model(self.model, self.input_shape))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` every image is brought to."""
        return (1 if self.grayscale else 3, self.image_size, self.image_size)

    def model_version(self, version: int) -> str:
        """The name Label Studio shows for model ``version`` (0: no model trained yet)."""
        suffix = f"v{version}" if version else "untrained"
        return f"activelab-{self.model}-{self.strategy}-{suffix}"

    def train_settings(self) -> TrainSettings:
        """The :class:`activelab.training.TrainSettings` of one training (no validation split, no progress bar)."""
        from activelab.training import TrainSettings

        return TrainSettings(max_epochs=self.max_epochs, lr=self.lr, batch_size=self.batch_size,
                             min_steps=self.min_steps, progress=False)
