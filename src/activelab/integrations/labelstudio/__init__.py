"""An ML backend for Label Studio: activelab suggests which task to label next and learns from the labels.

Teams that label in Label Studio connect activelab as the project's ML backend (Project > Settings >
Model). Label Studio then asks it for predictions, and each prediction carries the model's class and a
score from an activelab strategy, so Label Studio's "Uncertainty sampling" queue (or a sort on the
prediction score) serves the most informative task first; each new annotation makes activelab train a new
model on the project's labels and bump its model version.

Modules: :mod:`.labelconfig` (which ``<Choices>`` and ``<Image>`` of the labelling config to answer),
:mod:`.client` (Label Studio's API: annotated tasks, images, tokens), :mod:`.learner` (one project's
model, training, scores, files), :mod:`.backend` (projects, training thread, backend directory),
:mod:`.app` (the HTTP endpoints) and :mod:`.cli` (``activelab label-studio-backend``).

Installing: the server needs FastAPI, uvicorn and httpx; Label Studio itself runs in an environment of its
own (``scripts/ensure-label-studio.sh``).
"""

from activelab.integrations.labelstudio.cli import add_arguments, main

__all__ = ["add_arguments", "main"]
