"""FMD+: feature map distortion with a keep term that acts only when needed and transfer-oriented updates."""

from __future__ import annotations

import io as _io
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from onlymine.attacks.base import Attack, improve_best, project, uniform_like
from onlymine.attacks.fmd import margin
from onlymine.attacks.views import BlockShuffle, ResizePad
from onlymine.models.classifier import Classifier


def relative_distortion(feats: dict[str, torch.Tensor], clean: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over layers of ||f_l(x*) - f_l(x)||^2 / ||f_l(x)||^2 per image -> (N,).

    Normalising each layer by its clean energy makes layers of very different scales count equally."""
    total = None
    for name, f in feats.items():
        c = clean[name].float()
        d = (f.float() - c).pow(2).flatten(1).sum(1) / c.pow(2).flatten(1).sum(1).clamp_min(1e-12)
        total = d if total is None else total + d
    assert total is not None
    return total


def importance_decrease(feats: dict[str, torch.Tensor], clean: dict[str, torch.Tensor],
                        weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over layers of ``-<w_l, f_l(x*) - f_l(x)> / (||w_l|| ||f_l(x)||)`` per image -> (N,).

    ``w_l`` is a feature-importance map (FIA: the aggregate gradient of the class logit with respect to
    ``f_l``); the term grows as the features that carry the class evidence shrink, scaled like a relative
    distortion so that the keep term's weight means the same."""
    total = None
    for name, f in feats.items():
        c, w = clean[name].float(), weights[name].float()
        d = -(w * (f.float() - c)).flatten(1).sum(1) / (
            w.flatten(1).norm(dim=1) * c.flatten(1).norm(dim=1)).clamp_min(1e-12)
        total = d if total is None else total + d
    assert total is not None
    return total


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).expand(3, 1, size, size).contiguous()


def texture_budget(x: torch.Tensor, eps: float, floor: float = 0.5, window: int = 7) -> torch.Tensor:
    """Per-pixel L-inf budget in [floor*eps, eps]: full budget in textured regions, less in flat ones.

    Local standard deviation of luminance (a simple visibility mask in the spirit of JND models): the eye
    sees noise on flat areas (sky, skin) far more than on texture, so flat areas get a smaller budget.
    """
    lum = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None, None]
    pad = window // 2
    mean = F.avg_pool2d(F.pad(lum, (pad,) * 4, mode="replicate"), window, stride=1)
    sq = F.avg_pool2d(F.pad(lum**2, (pad,) * 4, mode="replicate"), window, stride=1)
    std = (sq - mean**2).clamp_min(0).sqrt()[0]
    ref = torch.quantile(std.flatten()[:: max(1, std.numel() // 65536)], 0.6).clamp_min(1e-3)
    return eps * (floor + (1 - floor) * (std / ref).clamp(0, 1))


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG encode/decode of a (3,H,W) [0,1] image (not differentiable; used straight-through)."""
    arr = (x.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = _io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(out).permute(2, 0, 1).to(x.device)


@contextmanager
def linear_backward(net: torch.nn.Module, start: float = 0.0) -> Iterator[None]:
    """Inside the block, the ReLU/ReLU6 modules of ``net`` from fraction ``start`` of their order on pass
    gradients through unchanged (LinBP).

    Forward values are untouched (``out = x + (relu(x) - x).detach()``); only the backward pass sees a network
    that is linear from that depth on. Guo et al., "Backpropagating Linearly Improves Transferability of
    Adversarial Examples", NeurIPS 2020: gradients of the partly linearised network transfer better."""
    def hook(_m: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        return inp[0] + (out - inp[0]).detach()

    acts = [m for m in net.modules() if isinstance(m, torch.nn.ReLU | torch.nn.ReLU6)]
    acts = acts[math.floor(start * len(acts)):]
    inplace = [m.inplace for m in acts]
    for m in acts:  # an in-place activation would overwrite the input the hook needs
        m.inplace = False
    handles = [m.register_forward_hook(hook) for m in acts]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m, flag in zip(acts, inplace, strict=True):
            m.inplace = flag


SCHEDULES = ("constant", "cosine")


def step_size(alpha: float, step: int, steps: int, schedule: str = "constant") -> float:
    """Step size at ``step`` (0-based) of ``steps``: ``alpha``, or a cosine decay from ``alpha`` to ``alpha/4``."""
    if schedule == "constant" or steps <= 1:
        return alpha
    low = alpha / 4
    return low + (alpha - low) * 0.5 * (1 + math.cos(math.pi * step / (steps - 1)))


class FMDPlus(Attack):
    r"""FMD+ : onlymine's improved feature map distortion (see docs/beyond.md for the measurements).

    Starts from FMD (Chai et al., arXiv:2402.09316) and changes what the paper's single sign step on
    ``MSE - lambda * CE`` gets wrong: the CE term fights the feature term at every step even when the
    authorized decision is safe. Objective per image:

    .. math:: J = \sum_l \frac{\|f_l(T(x^*)) - f_l(T(x))\|^2}{\|f_l(T(x))\|^2}
              - \lambda \max(0, \kappa - m(x^*))

    where ``m`` is the authorized logit margin (hinge keep term: acts only when the margin drops below
    ``kappa``) and ``T`` is a random input-diversity transform from a fixed bank (resize-and-pad, Xie et al.,
    "Improving Transferability of Adversarial Examples with Input Diversity", CVPR 2019), with the clean
    features cached per transform. Updates use momentum on L1-normalised gradients (MI-FGSM, Dong et al.,
    "Boosting Adversarial Attacks with Momentum", CVPR 2018), optionally smoothed by a Gaussian kernel
    (TI, Dong et al., CVPR 2019). Optional straight-through JPEG (expectation over transformation, Athalye
    et al. 2018) makes it survive re-encoding; an optional texture budget spends less of ``eps`` on flat
    regions for higher PSNR/SSIM. The best iterate whose authorized prediction is ``y`` is returned.

    Args:
        model: authorized :class:`~onlymine.models.Classifier`.
        layers: feature taps whose relative distortions are summed (e.g. four MobileNetV2 stages).
        eps, alpha, steps, random_start, seed: as :class:`~onlymine.attacks.FMD`.
        lam: weight of the hinge keep term. kappa: required logit margin.
        momentum: MI-FGSM decay (0 disables). diversity: probability of a DI transform per step (0 disables).
        ti_kernel: Gaussian smoothing kernel size for the gradient (0 disables).
        jpeg_prob: probability per step of a straight-through JPEG round trip (quality drawn in 50..90).
        texture: use :func:`texture_budget` (per-pixel budget between ``texture_floor*eps`` and ``eps``).
        schedule: ``"constant"`` step ``alpha``, or ``"cosine"``: from ``alpha`` down to ``alpha/4`` (large
            steps to travel, small ones to settle; see :func:`step_size`).
        importance: FIA (Wang et al., "Feature Importance-aware Transferable Adversarial Attacks", ICCV 2021):
            with ``importance`` > 0 random pixel-dropped copies (keep probability 0.7) per input-diversity view,
            the authorized taps' distortion becomes the decrease of the features weighted by the aggregate
            gradient of the class logit (:func:`importance_decrease`); 0 keeps the plain relative distortion.
        linbp: backpropagate linearly through the ReLU/ReLU6 activations from this fraction of their order on
            (0: all of them; None: off; :func:`linear_backward`, Guo et al., NeurIPS 2020). Forward values, the
            keep term's check and the best-iterate rule are unchanged.
        views: with ``views`` > 1 (or ``shuffle``), each step averages the objective over the image itself and
            ``views`` fresh random views in one batched pass (clean features recomputed under each view; the
            keep term and the best-iterate rule use the image itself; ``diversity`` and the fixed bank are then
            unused). Surrogates see the same views, scaled to their input size. Not combined with ``importance``.
        shuffle: BSR (Wang et al., "Boosting Adversarial Transferability by Block Shuffle and Rotation", CVPR
            2024): the random views cut the image into ``shuffle`` x ``shuffle`` blocks, rotate and shuffle them
            (:class:`~onlymine.attacks.views.BlockShuffle`); 0 uses resize-and-pad views.
        robust_keep: the keep term and the best-iterate rule also check the authorized margin on a JPEG round
            trip (quality 50..90) and a half-size copy of the image (one more batched forward per step).
        min_margin: the authorized margin the best-iterate rule asks for (:func:`~onlymine.attacks.base.improve_best`).
        surrogates: optional public models ``(classifier, layers)`` whose relative feature distortion is
            added to the objective (weight ``surrogate_weight`` each). They only make the perturbation more
            general; the keep term and the best-iterate rule still use the authorized model alone. Evaluate
            with the surrogates held out of the unauthorized models under test.

    Shape:
        images: (N, 3, H, W) in [0,1] or a list of (3, H_i, W_i); labels: (N,) or None; output like input.

    Example:
        >>> atk = FMDPlus(clf, layers=["features.4", "features.7", "features.11", "features.14"])
        >>> adv = atk(images)
    """

    name = "fmd+"

    def __init__(self, model: Classifier, layers: str | Sequence[str], eps: float = 16 / 255,
                 alpha: float = 2 / 255, steps: int = 100, lam: float = 10.0, kappa: float = 2.0,
                 momentum: float = 1.0, diversity: float = 0.7, ti_kernel: int = 0, jpeg_prob: float = 0.0,
                 texture: bool = False, texture_floor: float = 0.5, schedule: str = "constant",
                 random_start: bool = True, seed: int | None = 0, n_transforms: int = 6,
                 surrogates: Sequence[tuple[Classifier, Sequence[str]]] = (),
                 surrogate_weight: float = 1.0, linbp: float | None = None,
                 importance: int = 0, views: int = 1, shuffle: int = 0, robust_keep: bool = False,
                 min_margin: float = 0.0) -> None:
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        super().__init__(model, eps=eps, seed=seed, record_layers=self.layers)
        for name in self.layers:
            model.taps.resolve(name)
        self.alpha, self.steps, self.lam, self.kappa = float(alpha), int(steps), float(lam), float(kappa)
        self.momentum, self.diversity, self.ti_kernel = float(momentum), float(diversity), int(ti_kernel)
        self.jpeg_prob, self.texture, self.texture_floor = float(jpeg_prob), texture, float(texture_floor)
        self.random_start, self.n_transforms = random_start, int(n_transforms)
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown step schedule {schedule!r}; choose one of {SCHEDULES}")
        self.schedule, self.linbp = schedule, None if linbp is None else float(linbp)
        self.importance, self.views, self.shuffle = int(importance), int(views), int(shuffle)
        if self.views < 1 or self.shuffle < 0 or self.shuffle == 1:
            raise ValueError(f"views must be >= 1 and shuffle 0 or >= 2 blocks (got views={views}, shuffle={shuffle})")
        self.multi_view = self.views > 1 or self.shuffle > 0
        self.robust_keep, self.min_margin = bool(robust_keep), float(min_margin)
        self._n_views = self.views + 1 if self.multi_view else 1
        if self.multi_view and importance:
            raise ValueError("views > 1 / shuffle work without FIA (importance) so far")
        self.surrogates = [(clf, [layer] if isinstance(layer, str) else list(layer)) for clf, layer in surrogates]
        for clf, names in self.surrogates:
            for name in names:
                clf.taps.resolve(name)
        self.surrogate_weight = float(surrogate_weight)

    def config(self) -> dict[str, Any]:
        keys = ("layers", "alpha", "steps", "lam", "kappa", "momentum", "diversity", "ti_kernel", "jpeg_prob",
                "texture", "texture_floor", "schedule", "random_start", "n_transforms", "linbp", "importance",
                "views", "shuffle", "robust_keep", "min_margin")
        out = {**super().config(), **{k: getattr(self, k) for k in keys}}
        if self.surrogates:
            out["surrogates"] = {clf.name: names for clf, names in self.surrogates}
            out["surrogate_weight"] = self.surrogate_weight
        return out

    # -- input diversity --------------------------------------------------------------------------
    def _transform_bank(self, gen: torch.Generator) -> list[ResizePad | None]:
        """The fixed input-diversity views of the one-view mode; index 0 (``None``) is the identity."""
        h = self.model.cfg.input_size[0]
        return [None, *(ResizePad.draw(h, gen) for _ in range(self.n_transforms))]

    @staticmethod
    def _apply(z: torch.Tensor, t: ResizePad | None) -> torch.Tensor:
        return z if t is None else t(z)

    def _forward(self, x: list[torch.Tensor], t: ResizePad | None) -> tuple[torch.Tensor, dict]:
        with self.model.taps.capture(self.layers) as feats:
            logits = self.model.run_net(self._apply(self.model.preprocess(x), t))
        return logits, dict(feats)

    def _surrogate_features(self, x: list[torch.Tensor], t: ResizePad | None) -> list[dict]:
        """Each surrogate's tapped features of ``x`` under the view ``t`` (scaled to its input size)."""
        h = self.model.cfg.input_size[0]
        out = []
        for clf, names in self.surrogates:
            hs = clf.cfg.input_size[0]
            ts = None if t is None else t.scaled(hs, hs, hs / h)
            with clf.taps.capture(names) as feats:
                clf.run_net(self._apply(clf.preprocess(x), ts))
            out.append(dict(feats))
        return out

    def _importance(self, z: torch.Tensor, y: torch.Tensor, t: ResizePad | None,
                    gen: torch.Generator) -> dict[str, torch.Tensor]:
        """FIA aggregate gradient: the mean over pixel-dropped copies of d logit_y / d f_l, per tapped layer
        (``z``: the preprocessed clean batch, seen through view ``t``)."""
        total: dict[str, torch.Tensor] = {}
        for _ in range(self.importance):
            keep = (torch.rand(z.shape[0], 1, *z.shape[2:], generator=gen) < 0.7).to(z)
            with self.model.taps.capture(self.layers) as feats:
                logits = self.model.run_net(self._apply((z * keep).requires_grad_(True), t))
            names = list(feats)
            grads = torch.autograd.grad(logits.float().gather(1, y[:, None]).sum(), [feats[n] for n in names])
            for n, g in zip(names, grads, strict=True):
                total[n] = total.get(n, 0) + g.detach().float() / self.importance
        return total

    def _distortion(self, x: list[torch.Tensor], feats: dict, k: int, clean: list[dict],
                    clean_sur: list[list[dict]], t: ResizePad | None,
                    weights: list[dict] | None = None) -> torch.Tensor:
        """The authorized taps' relative distortion (or FIA importance decrease) plus the weighted surrogates'
        relative distortion (view ``k`` of the bank)."""
        dist = relative_distortion(feats, clean[k]) if not weights else importance_decrease(feats, clean[k], weights[k])
        if self.surrogates:
            for f, c in zip(self._surrogate_features(x, t), clean_sur[k], strict=True):
                dist = dist + self.surrogate_weight * relative_distortion(f, c)
        return dist

    # -- the attack ---------------------------------------------------------------------------------
    def perturb(self, x0: list[torch.Tensor], y: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        bank = self._transform_bank(gen)  # drawn in both modes (the random stream stays the same)
        used = bank[:1] if self.multi_view else bank  # the multi-view mode needs the identity's clean features only
        with torch.no_grad():
            clean = [self._forward(x0, t)[1] for t in used]
            clean_sur = [self._surrogate_features(x0, t) for t in used] if self.surrogates else [[] for _ in used]
        weights = None
        if self.importance > 0:
            z0 = self.model.preprocess(x0).detach()
            weights = [self._importance(z0, y, t, gen) for t in bank]
        with torch.no_grad():  # the multi-view mode's clean batches, one per model (authorized first)
            zs = [clf.preprocess(x0) for clf in [self.model, *(c for c, _ in self.surrogates)]] if self.multi_view else []
        budgets = [texture_budget(x, self.eps, self.texture_floor) if self.texture else None for x in x0]
        x = [self._project(xi + uniform_like(xi, self.eps, gen) * (1 if b is None else b / self.eps), xi, b)
             if self.random_start else xi.clone() for xi, b in zip(x0, budgets, strict=True)]
        velocity = [torch.zeros_like(xi) for xi in x0]
        best = [xi.clone() for xi in x]
        best_score = torch.full((len(x0),), -math.inf, device=y.device)
        best_margin = torch.full((len(x0),), -math.inf, device=y.device)
        kernel = gaussian_kernel(self.ti_kernel, self.ti_kernel / 4).to(y.device) if self.ti_kernel > 1 else None
        with ExitStack() as linear:  # LinBP's hooks for the steps only (forward values are unchanged)
            if self.linbp is not None:
                for net in [self.model.net, *(clf.net for clf, _ in self.surrogates)]:
                    linear.enter_context(linear_backward(net, self.linbp))
            for step in range(self.steps):
                alpha = step_size(self.alpha, step, self.steps, self.schedule)
                xs = [xi.requires_grad_(True) for xi in x]
                if self.multi_view:
                    jpeg_q = self._draw_jpeg(gen)
                    inp = self._jpeg(xs, jpeg_q)
                    dist, m, extra = self._multi_view(inp, zs, clean[0], clean_sur[0], y, gen)
                    candidate = not jpeg_q  # the identity view is always in the batch
                else:
                    draw = torch.rand(2, generator=gen)
                    k = 1 + int(torch.randint(0, self.n_transforms, (1,), generator=gen)) if (
                        self.n_transforms and float(draw[0]) < self.diversity) else 0
                    jpeg_q = 50 + int(40 * float(draw[1])) if float(torch.rand(1, generator=gen)) < self.jpeg_prob else 0
                    inp = self._jpeg(xs, jpeg_q)
                    logits, feats = self._forward(inp, bank[k])
                    dist = self._distortion(inp, feats, k, clean, clean_sur, bank[k], weights)
                    m, extra = margin(logits, y), 0.0
                    candidate = k == 0 and not jpeg_q  # an undistorted view: a valid candidate for "best"
                keep, valid = self._keep(inp, m, y, gen)
                j = (dist + extra) / self._n_views - self.lam * keep
                grads = torch.autograd.grad(j.sum(), xs)
                with torch.no_grad():
                    if candidate:
                        improve_best(best, best_score, best_margin, x, range(len(x)), dist, valid, self.min_margin)
                    new = []
                    for i, (xi, g) in enumerate(zip(x, grads, strict=True)):
                        if kernel is not None:
                            g = F.conv2d(g[None], kernel, padding=self.ti_kernel // 2, groups=3)[0]
                        velocity[i] = self.momentum * velocity[i] + g / g.abs().mean().clamp_min(1e-12)
                        new.append(self._project(xi + alpha * velocity[i].sign(), x0[i], budgets[i]))
                    x = new
        with torch.no_grad():
            logits, feats = self._forward(x, None)
            improve_best(best, best_score, best_margin, x, range(len(x)),
                         self._distortion(x, feats, 0, clean, clean_sur, None, weights),
                         self._keep(x, margin(logits, y), y, gen)[1], self.min_margin)
        return best

    def _keep(self, x: list[torch.Tensor], m: torch.Tensor, y: torch.Tensor,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The keep term (hinge on the authorized margin ``m`` of ``x``) and the margin the best-iterate rule checks.

        With ``robust_keep`` the authorized model also sees a real JPEG round trip of ``x`` (quality drawn in
        50..90, straight-through) and a half-size copy: the hinge covers all three margins and the rule takes the
        smallest, so the saved image keeps its authorized prediction after common re-encoding too."""
        if not self.robust_keep:
            return F.relu(self.kappa - m), m
        q = 50 + int(40 * float(torch.rand(1, generator=gen)))
        half = [F.interpolate(xi[None], scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)[0]
                for xi in x]
        logits = self.model.run_net(self.model.preprocess(self._jpeg(x, q) + half))
        rm = margin(logits, y.repeat(2)).view(2, -1)
        keep = F.relu(self.kappa - m) + F.relu(self.kappa - rm).sum(0)
        return keep, torch.minimum(m, rm.min(0).values)

    def _draw_jpeg(self, gen: torch.Generator) -> int:
        """JPEG quality for this step's straight-through round trip (0: none)."""
        q = 50 + int(40 * float(torch.rand(1, generator=gen)))
        return q if float(torch.rand(1, generator=gen)) < self.jpeg_prob else 0

    @staticmethod
    def _jpeg(xs: list[torch.Tensor], quality: int) -> list[torch.Tensor]:
        """Straight-through JPEG: the forward pass sees the round trip, the gradient flows as if it did not."""
        return [xi + (jpeg_round_trip(xi, quality) - xi).detach() for xi in xs] if quality else xs

    def _multi_view(self, x: list[torch.Tensor], z0: list[torch.Tensor], clean: dict[str, torch.Tensor],
                    clean_sur: list[dict], y: torch.Tensor,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batched pass per model over the identity and ``views`` fresh random views of ``x`` (BSR when
        ``shuffle``, else resize-and-pad), each compared with the clean image under the same view.

        ``z0``: the clean batch preprocessed for the authorized model, then for each surrogate; ``clean`` and
        ``clean_sur``: their identity-view features. Returns the identity view's distortion (surrogates included)
        and the authorized margin (the keep term and the best-iterate rule see the image itself), and the summed
        distortion of the random views."""
        h, w = z0[0].shape[-2:]
        views = [BlockShuffle.draw(h, w, self.shuffle, gen) if self.shuffle else ResizePad.draw(h, gen)
                 for _ in range(self.views)]
        n = z0[0].shape[0]
        models = [(self.model, self.layers), *self.surrogates]
        dist = rest = margin_id = None
        for i, ((clf, names), zc, cid) in enumerate(zip(models, z0, [clean, *clean_sur], strict=True)):
            hs, ws = zc.shape[-2:]
            vs = views if i == 0 else [v.scaled(hs, ws, hs / h) for v in views]
            with torch.no_grad(), clf.taps.capture(names) as cf:
                clf.run_net(torch.cat([v(zc) for v in vs]))
                clean_views = dict(cf)
            z = clf.preprocess(x)
            with clf.taps.capture(names) as captured:
                logits = clf.run_net(torch.cat([z, *(v(z) for v in vs)]))
                feats = dict(captured)
            weight = 1.0 if i == 0 else self.surrogate_weight
            d = weight * relative_distortion({k: f[:n] for k, f in feats.items()}, cid)
            r = weight * relative_distortion({k: f[n:] for k, f in feats.items()}, clean_views).view(len(vs), n).sum(0)
            dist, rest = (d, r) if dist is None or rest is None else (dist + d, rest + r)
            if i == 0:
                margin_id = margin(logits[:n], y)
        assert dist is not None and rest is not None and margin_id is not None
        return dist, margin_id, rest

    def _project(self, x: torch.Tensor, x0: torch.Tensor, budget: torch.Tensor | None) -> torch.Tensor:
        if budget is None:
            return project(x, x0, self.eps)
        return torch.clamp(torch.minimum(torch.maximum(x, x0 - budget), x0 + budget), 0.0, 1.0)

