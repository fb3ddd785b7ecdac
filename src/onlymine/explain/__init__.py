"""Explanations of what protection does to the models: Grad-CAM heat maps (the paper's Figure 3) and the
distribution of top-1 softmax confidence (its Figure 5), for the authorized and unauthorized models on clean
and protected images."""

from onlymine.explain.confidence import confidence_figure, confidence_rows
from onlymine.explain.gradcam import gradcam_grid, heatmap

__all__ = ["confidence_figure", "confidence_rows", "gradcam_grid", "heatmap"]
