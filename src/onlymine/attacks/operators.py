"""OPS views: random chains of simple image operators, taken at a random neighbour of the image.

Guo et al., "Boosting Adversarial Transferability through Augmentation in Hypothesis Space", CVPR 2025 (OPS,
operator-perturbation-based stochastic optimisation). Each view composes 2-4 operators drawn from a basic set
(identity, flips, cyclic shifts, rotations by 5-180 degrees, contrast scaling by 1/2..1/8, resize-and-pad at rates
1.1-2.9) and adds uniform noise of a random radius (``beta * eps * r``, r in 0.25..1.5): the gradient is averaged
over a neighbourhood of the surrogate's hypothesis space as well as of the input.

Unlike the cross-entropy attack of the paper, a feature-distortion objective compares the protected image with the
clean one under the *same* view, so a view here is a frozen record (operators, parameters and a noise seed) that is
replayed on both; the noise is a common offset of the two, a neighbour of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from onlymine.attacks.views import ResizePad

# the basic set of the reference implementation (Trustworthy-AI-Group/TransferAttack, input_transformation/ops.py)
ANGLES = (5.0, -5.0, 15.0, -15.0, 45.0, -45.0, 90.0, -90.0, 180.0)
SCALES = (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)
RATES = (1.1, 1.3, 1.5, 1.7, 1.9, 2.1, 2.3, 2.5, 2.7, 2.9)
BASIC = (("identity", 0.0), ("vflip", 0.0), ("hflip", 0.0), ("vshift", 0.0), ("hshift", 0.0),
         *(("rotate", a) for a in ANGLES), *(("scale", s) for s in SCALES), *(("dim", r) for r in RATES))
LEVELS = (2, 3, 4)  # operators per chain
RATIOS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)  # noise radius as a share of beta * eps
BETA = 2.0
STD = 0.226  # mean ImageNet channel std: the views see normalised inputs, the noise radius is in [0,1] units


@dataclass(frozen=True)
class OperatorChain:
    """A chain of basic operators (``ops``: index into :data:`BASIC` and a uniform draw in [0,1) for its random
    part: the shift, or the size and place of the resize-and-pad), then uniform noise of ``radius`` (normalised
    units) replayed from ``seed``."""

    ops: tuple[tuple[int, float, float, float], ...]
    radius: float
    seed: int

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        for k, u, v, w in self.ops:
            z = _apply(BASIC[k], z, u, v, w)
        if self.radius > 0:
            gen = torch.Generator().manual_seed(self.seed)
            z = z + (torch.rand(z.shape[1:], generator=gen) * 2 - 1).to(z) * self.radius
        return z

    def scaled(self, h: int, w: int, f: float = 1.0) -> OperatorChain:
        """The same view for another input size (every parameter is relative); ``f`` is unused."""
        return self

    @classmethod
    def draw(cls, gen: torch.Generator, eps: float = 16 / 255, beta: float = BETA) -> OperatorChain:
        level = LEVELS[int(torch.randint(0, len(LEVELS), (1,), generator=gen))]
        kinds = torch.randint(0, len(BASIC), (level,), generator=gen).tolist()
        u = torch.rand(level, 3, generator=gen).tolist()
        ratio = RATIOS[int(torch.randint(0, len(RATIOS), (1,), generator=gen))]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        ops = tuple((int(k), *(float(a) for a in r)) for k, r in zip(kinds, u, strict=True))
        return cls(ops, beta * eps * ratio / STD, seed)  # type: ignore[arg-type]


def _apply(op: tuple[str, float], z: torch.Tensor, u: float, v: float, w: float) -> torch.Tensor:
    name, p = op
    h, wd = z.shape[-2:]
    if name == "vflip":
        return z.flip(-2)
    if name == "hflip":
        return z.flip(-1)
    if name == "vshift":
        return torch.roll(z, int(u * h), dims=-2)
    if name == "hshift":
        return torch.roll(z, int(u * wd), dims=-1)
    if name == "rotate":
        return TF.rotate(z, p, interpolation=InterpolationMode.BILINEAR)
    if name == "scale":  # x / s on the normalised input: contrast towards the mean
        return z / p
    if name == "dim":  # resize to a random size in [1/rate, 1] of the side, pad at a random place (DI)
        side = max(1, round(h * (1 / p + (1 - 1 / p) * u)))
        top, left = int(v * (h - side + 1)), int(w * (wd - side * wd // h + 1))
        return ResizePad(side, top, left, antialias=False)(z)
    return z
