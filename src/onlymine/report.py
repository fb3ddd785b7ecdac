"""The shared report format: results JSON/CSV, paper-shaped tables, HTML report, image grids and plots.

Every experiment (ImageNet, faces, detection, ablations) writes its results through this module so that
all reports look alike. It knows nothing about models or attacks; it formats numbers it is given.

API:

* :func:`write_json`, :func:`write_csv` (atomic; CSV columns = union of the rows' keys, in first-seen order).
* :class:`Table` (``headers``, ``rows``, ``caption``) -> ``.markdown()`` / ``.html()``.
* :class:`MatrixRow` (one authorized model: its ``scores`` by judge name, its ``quality`` means, ``n``) and
  :func:`paper_table` (rows, judges, metric) -> the paper's table shape: authorized model, its own score, each
  unauthorized judge, the unauthorized average, PSNR/SSIM. Scores are fractions in [0, 1], shown as %.
  Works for any metric (top-1 accuracy, identity accuracy, emotion accuracy, detection mAP or recall).
* :func:`image_grid` (png, [(caption, original, protected)]) -> original / protected / amplified difference.
* :func:`bar_plot` (per-model grouped bars) and :func:`scatter_plot` (protection against PSNR).
* :class:`Section` and :func:`html_report` -> one self-contained HTML file (tables inline, figures by
  relative path), :func:`percent` / :func:`number` for consistent formatting.
"""

from __future__ import annotations

import csv
import html
import io as _bytesio
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from onlymine import io

log = logging.getLogger(__name__)

NA = "n/a"


# ---------------------------------------------------------------------------------------------- files
def write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON, written atomically (``inf`` stays ``Infinity``; non-JSON values become strings)."""
    io.write_text_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """CSV with the union of the rows' keys as columns; lists/dicts are written as JSON, ``None`` as empty."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = _bytesio.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in cols})
    io.write_text_atomic(path, buf.getvalue())


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return v


# ---------------------------------------------------------------------------------------------- numbers
def percent(v: float | None, digits: int = 2) -> str:
    """0.1197 -> '11.97' (the paper's tables are in %); ``None`` -> 'n/a'."""
    return NA if v is None else f"{100 * v:.{digits}f}"


def number(v: float | None, digits: int = 2) -> str:
    """Plain number; ``inf`` -> 'inf'; ``None`` -> 'n/a'."""
    if v is None:
        return NA
    return "inf" if math.isinf(v) else f"{v:.{digits}f}"


def mean(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


# ---------------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""

    def markdown(self) -> str:
        esc = [[str(c).replace("|", "\\|") for c in r] for r in self.rows]
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in esc]
        return (f"{self.caption}\n\n" if self.caption else "") + "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_cell(c: str) -> str:
    s = html.escape(str(c))
    if s.startswith("**") and s.endswith("**") and len(s) > 4:
        return f"<b>{s[2:-2]}</b>"
    return s


@dataclass
class MatrixRow:
    """One row of a paper-shaped table: the authorized model and every judge's score on its protected files.

    ``scores`` maps judge name -> fraction in [0, 1] (may include the authorized model itself); ``quality`` maps
    ``psnr``/``ssim``/... -> mean value; ``label`` names the method or setting (e.g. ``FMD (paper)``).
    """

    authorized: str
    scores: dict[str, float | None]
    quality: dict[str, float | None] = field(default_factory=dict)
    n: int = 0
    label: str = ""
    surrogates: tuple[str, ...] = ()  # judges the attack used as surrogates: not scored, shown as such

    @property
    def own(self) -> float | None:
        return self.scores.get(self.authorized)

    def unauthorized_mean(self) -> float | None:
        return mean(v for k, v in self.scores.items() if k != self.authorized)


def short_name(spec: str) -> str:
    """``torchvision:mobilenet_v2`` -> ``mobilenet_v2``; ``efficientnet-lite:lite0`` -> ``lite0``."""
    return spec.split(":", 1)[1] if ":" in spec else spec


def paper_table(rows: Sequence[MatrixRow], judges: Sequence[str], metric: str = "accuracy",
                quality_keys: Sequence[str] = ("psnr", "ssim"), caption: str = "",
                show_label: bool = False) -> Table:
    """Authorized | n | authorized <metric> | one column per judge (own cell shown as '—') | unauth avg | quality.

    The last row averages the rows (like the paper's "Average" line).
    """
    headers = (["Method"] if show_label else []) + ["Authorized", "n", f"Authorized {metric} (%)"]
    headers += [f"{short_name(j)} (%)" for j in judges] + ["Unauthorized avg (%)"]
    headers += [{"psnr": "PSNR (dB)", "ssim": "SSIM"}.get(q, q.upper()) for q in quality_keys]
    out = []
    for r in rows:
        cells = ([r.label] if show_label else []) + [short_name(r.authorized), str(r.n), percent(r.own)]
        cells += ["—" if j == r.authorized else "surrogate" if j in r.surrogates else percent(r.scores.get(j))
                  for j in judges]
        cells += [f"**{percent(r.unauthorized_mean())}**"]
        cells += [number(r.quality.get(q), 2 if q == "psnr" else 4) for q in quality_keys]
        out.append(cells)
    if len(rows) > 1:
        avg = ([""] if show_label else []) + ["Average", "", percent(mean(r.own for r in rows))]
        avg += [percent(mean(r.scores.get(j) for r in rows if j != r.authorized)) for j in judges]
        avg += [f"**{percent(mean(r.unauthorized_mean() for r in rows))}**"]
        avg += [number(_finite_mean(r.quality.get(q) for r in rows), 2 if q == "psnr" else 4)
                for q in quality_keys]
        out.append(avg)
    return Table(headers, out, caption)


def _finite_mean(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    f = [x for x in v if math.isfinite(x)]
    return sum(f) / len(f) if f else (math.inf if v else None)


# ---------------------------------------------------------------------------------------------- figures
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def amplified_difference(original: torch.Tensor, protected: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """0.5 + (protected - original) scaled so that +-eps (or the largest change) spans [0, 1]."""
    d = protected.float().cpu() - original.float().cpu()
    scale = eps if eps else float(d.abs().max()) or 1.0
    return (0.5 + d / (2 * scale)).clamp(0, 1)


def image_grid(path: str | Path, items: Sequence[tuple[str, torch.Tensor, torch.Tensor]], eps: float | None = None,
               title: str = "") -> Path:
    """PNG with one line per item: original, protected, amplified difference (+-eps -> full range)."""
    plt = _plt()
    n = max(1, len(items))
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    amp = f"x{0.5 / eps:.0f}" if eps else "auto-scaled"
    for row, (caption, orig, prot) in zip(axes, items, strict=False):
        for ax, img, t in zip(row, (orig, prot, amplified_difference(orig, prot, eps)),
                              ("original", "protected", f"difference ({amp})"), strict=True):
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            ax.set_title(f"{caption}\n{t}" if t == "original" else t, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def bar_plot(path: str | Path, rows: Sequence[MatrixRow], judges: Sequence[str], title: str = "",
             ylabel: str = "accuracy (%)") -> Path:
    """Grouped bars: one group per authorized model, one bar per judge (the authorized one hatched)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows) + 2), 4))
    width = 0.8 / max(1, len(judges))
    for k, j in enumerate(judges):
        xs = [i + k * width for i in range(len(rows))]
        vals = [100 * (r.scores.get(j) or 0) for r in rows]
        bars = ax.bar(xs, vals, width, label=short_name(j))
        for b, r in zip(bars, rows, strict=True):
            if r.authorized == j:
                b.set_hatch("//")
                b.set_edgecolor("black")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))])
    ax.set_xticklabels([f"{short_name(r.authorized)}\n(authorized)" for r in rows], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, title="judge (hatched = authorized)", title_fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def scatter_plot(path: str | Path, points: Sequence[tuple[str, float | None, float | None]], title: str = "",
                 xlabel: str = "PSNR (dB)", ylabel: str = "unauthorized accuracy (%)") -> Path:
    """Labelled points (label, x, y in [0, 1]), e.g. protection against PSNR per method and authorized model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for label, x, y in points:
        if x is not None and y is not None and math.isfinite(x):
            groups.setdefault(label, []).append((x, 100 * y))
    for label, pts in groups.items():
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    plt = _plt()
    buf = _bytesio.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with io._atomic_writer(path, overwrite=True) as f:
        f.write(buf.getvalue())
    return path


# ---------------------------------------------------------------------------------------------- html
@dataclass
class Section:
    """A titled part of the HTML report: free text, tables and figures (paths relative to the report)."""

    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}caption{text-align:left;
font-weight:600;padding:4px 0}img{max-width:100%;border:1px solid #ddd;margin:6px 0}pre{background:#f7f7f7;
padding:8px;overflow-x:auto}"""


def html_report(path: str | Path, title: str, sections: Sequence[Section], meta: dict[str, Any] | None = None) -> Path:
    """Write one HTML page: title, a metadata list (machine, date, data...), then the sections."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if meta:
        parts.append("<ul>" + "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                                      for k, v in meta.items()) + "</ul>")
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts += [f"<p>{html.escape(p)}</p>" for p in s.text.split("\n\n")]
        parts += [t.html() for t in s.tables]
        parts += [f"<img src='{html.escape(f)}' alt='{html.escape(f)}'>" for f in s.figures]
    parts.append("</body></html>\n")
    io.write_text_atomic(path, "\n".join(parts))
    return Path(path)
