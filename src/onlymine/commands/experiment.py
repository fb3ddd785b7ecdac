"""``onlymine experiment NAME ...``: one sub-command per experiment, each in ``onlymine.commands.experiment_<name>``
(its flags, and the call of the library's ``onlymine.experiments.<name>``)."""

from __future__ import annotations

import argparse
import importlib

from onlymine.experiments import EXPERIMENTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="reproduce the paper's experiments (protect + evaluate + report)",
                       description="Run an experiment of the paper's protocol; see `onlymine experiment NAME -h`.")
    exp = p.add_subparsers(dest="experiment", required=True, metavar="NAME")
    for name in EXPERIMENTS:
        importlib.import_module(f"onlymine.commands.experiment_{name}").register(exp)
