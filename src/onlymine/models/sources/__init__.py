"""The built-in model sources; importing this package registers them (:mod:`onlymine.models.registry`).

* ``torchvision:NAME[:WEIGHTS|random]`` (:mod:`.torchvision`), ``efficientnet-lite:lite0|lite1|lite2``
  (:mod:`.efficientnet_lite`), ``timm:NAME[:random]`` (:mod:`.timm`);
* ``torchscript:PATH`` and ``onnx:PATH`` (:mod:`.files`).
"""

from onlymine.models.sources import efficientnet_lite, files, timm, torchvision

__all__ = ["efficientnet_lite", "files", "timm", "torchvision"]
