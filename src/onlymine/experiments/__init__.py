"""Experiments: thin protocols over the one protect path, the evaluation harness and the shared report.

* :mod:`~onlymine.experiments.methods`: the methods compared (clean, FMD, FMD+, baselines);
* :mod:`~onlymine.experiments.run`: a :class:`~onlymine.experiments.run.Protocol` (each model authorized in
  turn) and ``run_cell``, one (method, authorized model) cell: protect, then evaluate the saved files;
* :mod:`~onlymine.experiments.aggregate`: summaries, the paper-shaped matrix, the overview and the checks;
* :mod:`~onlymine.experiments.outputs`: results files, figures, HTML and Markdown reports.

Each experiment (``imagenet``, ``detection``, ``faces``) builds its protocol from plain options and runs it; its
``onlymine experiment <name>`` flags live in ``onlymine.commands.experiment_<name>``.
"""

EXPERIMENTS = ("imagenet", "detection", "faces")
