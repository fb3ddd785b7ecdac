"""Experiments: thin layers over the one protect path, the evaluation harness and the shared report.

Each experiment is a module ``onlymine.experiments.<name>`` exposing ``register(subparsers)`` (it adds the
``onlymine experiment <name>`` sub-command); list it in :data:`EXPERIMENTS`. The shared protocol (each model
authorized in turn, methods, resumable protect + evaluate, results/plots/HTML/Markdown) is in
:mod:`onlymine.experiments.protocol`.
"""

EXPERIMENTS = ("imagenet", "detection", "faces")
