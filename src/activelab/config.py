"""One RunConfig dataclass describes an experiment; CLI flags map onto its fields one to one."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from activelab.errors import StateError
from activelab.validation import check_float, check_int

#: The file in a run directory that holds the run's configuration.
CONFIG_FILE = "config.json"

#: Fields that may change between a run and its resumption: they do not change the results of the rounds
#: already run (``al_iter`` may grow to extend a finished run by more rounds).
RESUMABLE_CHANGES = frozenset({"num_workers", "progress", "out", "run_name", "al_iter"})


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one active-learning run.

    Sizes: ``n_train_images`` labels to start with, ``al_samples_per_iter`` labels per acquisition,
    ``al_iter`` acquisitions (so ``al_iter + 1`` trainings: the last batch is trained on too).
    Splits: ``n_val`` validation items (early stopping only), ``n_test`` test items (reporting only;
    None = the source's whole official test split, or 20 %), ``pool_size`` (None = every remaining item),
    ``n_holdout`` items for helper heads (None = 1000 when the strategy needs one, else 0).
    """

    sampling_method: str = "margin"
    data_class: str = "fashion-mnist"
    model_class: str = "cnn"
    n_train_images: int = 100
    al_samples_per_iter: int = 100
    al_iter: int = 5
    max_epochs: int = 20
    patience: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    num_workers: int = 0
    gpus: int = 0
    seed: int = 0
    pretrained: bool = False
    weights: str | None = None
    warm_start: bool = False
    mc_samples: int = 10
    n_val: int = 1000
    n_test: int | None = None
    pool_size: int | None = None
    n_holdout: int | None = None
    data_dir: str | None = None
    binary: bool = False
    rgb: bool = False
    bands: str | None = None
    out: str = "results"
    run_name: str | None = None
    progress: bool = True

    def validated(self) -> "RunConfig":
        """Check every number's range; names are checked where they are looked up."""
        check_int(self.n_train_images, "n_train_images", minimum=1)
        check_int(self.al_samples_per_iter, "al_samples_per_iter", minimum=1)
        check_int(self.al_iter, "al_iter", minimum=0)
        check_int(self.max_epochs, "max_epochs", minimum=1)
        check_int(self.patience, "patience", minimum=1)
        check_float(self.lr, "lr", minimum=0.0, exclusive_minimum=True)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.num_workers, "num_workers", minimum=0)
        check_int(self.gpus, "gpus", minimum=0)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.mc_samples, "mc_samples", minimum=1)
        check_int(self.n_val, "n_val", minimum=0)
        for name in ("n_test", "pool_size"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        if self.n_holdout is not None:
            check_int(self.n_holdout, "n_holdout", minimum=0)
        return self

    @property
    def name(self) -> str:
        """The run's name: ``run_name`` or ``<dataset>-<strategy>-<model>-seed<seed>``."""
        return self.run_name or f"{self.data_class}-{self.sampling_method}-{self.model_class}-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        """Where the run's ledger, config and weights live."""
        return Path(self.out) / self.name

    def source_options(self) -> dict:
        """The dataset options the user set (only those, so sources can reject what they do not support)."""
        options = {"binary": self.binary, "rgb": self.rgb, "bands": self.bands}
        return {key: value for key, value in options.items() if value}

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> "RunConfig":
        """Rebuild from :meth:`to_dict`, ignoring unknown keys from newer versions."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in payload.items() if key in names})

    @classmethod
    def load_saved(cls, run_dir: Path) -> "RunConfig":
        """The configuration saved in ``run_dir``, placed at ``run_dir`` wherever the folder now lives."""
        run_dir = Path(run_dir)
        saved = run_dir / CONFIG_FILE
        if not saved.is_file():
            raise StateError(f"{run_dir} is not an activelab run directory (no {CONFIG_FILE}).")
        try:
            config = cls.from_dict(json.loads(saved.read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise StateError(f"{saved} is not a readable run configuration ({error}).") from None
        return dataclasses.replace(config, out=str(run_dir.parent), run_name=run_dir.name)

    def differences(self, other: "RunConfig") -> list[str]:
        """Names of fields that differ and would change results (used to refuse a mismatched resume)."""
        return [field.name for field in dataclasses.fields(self)
                if field.name not in RESUMABLE_CHANGES and getattr(self, field.name) != getattr(other, field.name)]
