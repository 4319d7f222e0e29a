"""``activelab label-studio-backend``: serve a backend directory to Label Studio with uvicorn.

:func:`add_arguments` declares the flags on a (sub)command parser and :func:`main` runs the server until
it is interrupted; ``activelab.cli`` wires them in as the ``label-studio-backend`` command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from activelab.errors import ConfigError
from activelab.integrations.labelstudio.settings import BackendSettings
from activelab.serving import check_port_free, http_url, is_loopback

if TYPE_CHECKING:
    from activelab.integrations.labelstudio.app import BasicAuth

log = logging.getLogger(__name__)
_DEFAULTS = BackendSettings.__dataclass_fields__
#: The environment variable holding the basic-auth password (kept off the command line, which others see).
PASSWORD_VARIABLE = "ACTIVELAB_BACKEND_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's flags on ``parser``."""
    default = {name: field.default for name, field in _DEFAULTS.items()}
    parser.add_argument("--dir", required=True, type=Path,
                        help="backend directory: models, labels and downloaded images (created when missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=9090, help="port to listen on (default: 9090)")
    parser.add_argument("--strategy", default=default["strategy"],
                        help="how tasks are scored (default: margin): a strategy that scores each task on its own, "
                             "such as least_confidence, margin, entropy, ratio, bald, mc_entropy")
    parser.add_argument("--model", default=default["model"],
                        help="model to train: cnn, resnet18, resnet50, torchvision:NAME, timm:NAME (default: cnn)")
    parser.add_argument("--image-size", type=int, default=default["image_size"],
                        help="images are resized to SIZE x SIZE pixels (default: 28)")
    parser.add_argument("--grayscale", action="store_true", help="read images as one grey channel instead of RGB")
    parser.add_argument("--max-epochs", type=int, default=default["max_epochs"], help="epochs per training (default: 20)")
    parser.add_argument("--min-steps", type=int, default=default["min_steps"],
                        help="at least this many optimiser steps per training (default: 100)")
    parser.add_argument("--batch-size", type=int, default=default["batch_size"], help="training batch size (default: 32)")
    parser.add_argument("--lr", type=float, default=default["lr"], help="Adam learning rate (default: 0.001)")
    parser.add_argument("--mc-samples", type=int, default=default["mc_samples"],
                        help="MC-dropout passes for the mc_* strategies and BALD (default: 10)")
    parser.add_argument("--min-labels", type=int, default=default["min_labels"],
                        help="labels needed before the first training (default: 2)")
    parser.add_argument("--seed", type=int, default=default["seed"], help="seed of every random choice (default: 0)")
    parser.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL"),
                        help="Label Studio's address, e.g. http://localhost:8080 (default: $LABEL_STUDIO_URL, "
                             "else the address Label Studio sends on connecting)")
    parser.add_argument("--api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                        help="personal access token (or legacy token) for Label Studio's API "
                             "(default: $LABEL_STUDIO_API_KEY)")
    parser.add_argument("--basic-auth-user", metavar="USER",
                        help=f"require HTTP basic authentication as USER, with the password in ${PASSWORD_VARIABLE} "
                             "(set the same under the connection's Basic Authentication in Label Studio)")


def auth_from(args: argparse.Namespace) -> BasicAuth | None:
    """The credentials ``--basic-auth-user`` and the password variable ask for; None without the flag."""
    from activelab.integrations.labelstudio.app import BasicAuth

    if not args.basic_auth_user:
        return None
    password = os.environ.get(PASSWORD_VARIABLE, "")
    if not password:
        raise ConfigError(f"--basic-auth-user needs the password in the environment variable {PASSWORD_VARIABLE}.")
    if ":" in args.basic_auth_user:
        raise ConfigError(f"--basic-auth-user={args.basic_auth_user!r} must not contain ':'.")
    return BasicAuth(args.basic_auth_user, password)


def settings_from(args: argparse.Namespace) -> BackendSettings:
    """The :class:`BackendSettings` the parsed flags describe (checked: one sentence on a bad value)."""
    return BackendSettings(model=args.model, strategy=args.strategy, image_size=args.image_size,
                           grayscale=args.grayscale, max_epochs=args.max_epochs, min_steps=args.min_steps,
                           batch_size=args.batch_size, lr=args.lr, mc_samples=args.mc_samples,
                           min_labels=args.min_labels, seed=args.seed)


def main(args: argparse.Namespace) -> int:
    """Serve the backend directory until interrupted; returns the exit code."""
    import uvicorn

    from activelab.integrations.labelstudio.app import create_app
    from activelab.integrations.labelstudio.backend import Backend

    settings = settings_from(args)
    auth = auth_from(args)
    check_port_free(args.host, args.port)
    with Backend(args.dir, settings, label_studio_url=args.label_studio_url, api_key=args.api_key) as backend:
        url = http_url(args.host, args.port)
        print(f"activelab ML backend for Label Studio at {url} (model {settings.model}, strategy "
              f"{settings.strategy}, directory {args.dir}); connect it under Project > Settings > Model.", flush=True)
        if not is_loopback(args.host) and auth is None:
            print(f"activelab: warning: listening on {args.host}, reachable from other machines; anyone who "
                  "reaches it can ask for predictions and trigger training (see --basic-auth-user).",
                  file=sys.stderr, flush=True)
        if args.label_studio_url is None:
            print("activelab: no --label-studio-url given; images and annotations are fetched from the address "
                  "Label Studio sends when it connects.", file=sys.stderr, flush=True)
        uvicorn.run(create_app(backend, auth=auth), host=args.host, port=args.port, log_level="warning")
    return 0
