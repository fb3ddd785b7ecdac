"""Ablations (``onlymine ablate CONFIG.yaml``): layer, eps, alpha, steps and lam, each setting through the one
protect path and the shared evaluation; Pareto front, per-layer bars, sweeps and the recommended defaults.

Modules: :mod:`~onlymine.ablation.config` (YAML designs), :mod:`~onlymine.ablation.runner` (protect +
evaluate per setting, resumable), :mod:`~onlymine.ablation.analysis` (front, recommendation),
:mod:`~onlymine.ablation.figures` (plots), :mod:`~onlymine.ablation.document` (results files, Markdown).
"""

from onlymine.ablation.analysis import pareto_front, recommend
from onlymine.ablation.config import AblationConfig, ConfigError, Point, load_config, parse_config
from onlymine.ablation.runner import AblationRun, run_ablation

__all__ = ["AblationConfig", "AblationRun", "ConfigError", "Point", "load_config", "pareto_front",
           "parse_config", "recommend", "run_ablation"]
