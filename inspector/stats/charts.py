"""Server-side SVG charts as strings: no JavaScript, printable, and readable without colour.

Every chart is an <svg role="img"> with a <title> and a <desc> (named by aria-labelledby), every number is a
text label, and every label goes through `esc` (XML escaping plus removal of characters XML 1.0 forbids), so
a defect type named `<script>` is text, never markup. Colours that are not #rgb/#rrggbb fall back to grey.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
GREY = "#7f7f7f"
HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'  # text stays readable over lines and bars
INK = "#1d2330"
MUTED = "#5b6475"
_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ID = re.compile(r"[^A-Za-z0-9_-]")


def esc(value: object) -> str:
    """Text or attribute value, safe inside SVG/XML and HTML."""
    return escape(_XML_INVALID.sub("", str(value)), quote=True)


def colour(value: str) -> str:
    return value if isinstance(value, str) and _COLOUR.fullmatch(value) else GREY


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _text_colour(fill: str) -> str:
    """Black or white, whichever reads better on `fill`."""
    fill = colour(fill).lstrip("#")
    if len(fill) == 3:
        fill = "".join(c * 2 for c in fill)
    r, g, b = (int(fill[k : k + 2], 16) for k in (0, 2, 4))
    return INK if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def _open(chart_id: str, width: int, height: int, title: str, desc: str) -> list[str]:
    cid = _ID.sub("-", chart_id) or "chart"
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="{cid}-title {cid}-desc" '
        f'font-family="{esc(FONT)}" font-size="12">',
        f'<title id="{cid}-title">{esc(title)}</title>',
        f'<desc id="{cid}-desc">{esc(desc)}</desc>',
    ]


def _empty(chart_id: str, title: str, desc: str) -> str:
    parts = _open(chart_id, 480, 60, title, desc)
    parts.append(f'<text x="10" y="35" fill="{MUTED}">No data in this view.</text></svg>')
    return "".join(parts)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _axis(parts: list[str], *, left: int, top: int, width: int, height: int, vmax: float) -> None:
    ticks = next((t for t in (5, 4, 2) if float(vmax / t).is_integer()), 4)  # whole-number steps when possible
    for k in range(ticks + 1):
        value = vmax * k / ticks
        y = top + height - height * k / ticks
        parts.append(f'<line x1="{left}" x2="{left + width}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e8ec"/>')
        label = _num(round(value, 2)) if vmax < 10 else str(round(value))
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{MUTED}">{esc(label)}</text>')


def _legend(parts: list[str], items: Sequence[tuple[str, str]], *, x: int, y: int, width: int) -> int:
    """Swatches with names, wrapped to `width`; returns the height used."""
    cx, cy = x, y
    for name, fill in items:
        w = 22 + 7 * min(len(name), 30)
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 18
        parts.append(
            f'<rect x="{cx}" y="{cy}" width="12" height="12" fill="{colour(fill)}" stroke="{INK}" stroke-width="0.5"/>'
        )
        parts.append(f'<text x="{cx + 16}" y="{cy + 10}" fill="{INK}">{esc(name[:30])}</text>')
        cx += w
    return cy - y + 18


@dataclass(frozen=True)
class Series:
    name: str
    colour: str
    values: Sequence[int]


def stacked_bars(*, chart_id: str, title: str, desc: str, categories: Sequence[str], series: Sequence[Series]) -> str:
    """Vertical bars, one per category (a day or week), stacked by series (defect types); the total on top of
    each bar and the count inside every segment tall enough to hold it."""
    totals = [sum(s.values[k] for s in series) for k in range(len(categories))]
    if not categories or not any(totals):
        return _empty(chart_id, title, desc)
    n = len(categories)
    left, top, plot_h = 56, 16, 220
    slot = max(14, min(90, 900 // n))
    plot_w = slot * n
    legend_rows = 1 + sum(7 * min(len(s.name), 30) + 22 for s in series) // max(plot_w, 400)
    width = left + max(plot_w, 400) + 16
    height = top + plot_h + 72 + 18 * legend_rows + 8
    parts = _open(chart_id, width, height, title, desc)
    vmax = _nice_max(max(totals))
    _axis(parts, left=left, top=top, width=plot_w, height=plot_h, vmax=vmax)
    every = math.ceil(n / 20)  # at most ~20 category labels
    bar_w = slot * 0.72
    for k, name in enumerate(categories):
        x = left + k * slot + (slot - bar_w) / 2
        y = top + plot_h
        for s in series:
            value = s.values[k]
            if not value:
                continue
            h = plot_h * value / vmax
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour(s.colour)}">'
                f"<title>{esc(name)}: {esc(s.name)} {value}</title></rect>"
            )
            if h >= 14 and bar_w >= 18:
                parts.append(
                    f'<text x="{x + bar_w / 2:.1f}" y="{y + h / 2 + 4:.1f}" text-anchor="middle" font-size="10" '
                    f'fill="{_text_colour(s.colour)}">{value}</text>'
                )
        if totals[k]:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" font-size="10" '
                f'font-weight="600" fill="{INK}"{HALO}>{totals[k]}</text>'
            )
        if k % every == 0:
            lx, ly = left + k * slot + slot / 2, top + plot_h + 14
            parts.append(
                f'<text x="{lx:.1f}" y="{ly}" text-anchor="end" font-size="10" fill="{MUTED}" '
                f'transform="rotate(-35 {lx:.1f} {ly})">{esc(name)}</text>'
            )
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{INK}"/>')
    _legend(parts, [(s.name, s.colour) for s in series], x=left, y=top + plot_h + 64, width=width - left - 8)
    parts.append("</svg>")
    return "".join(parts)


def pareto(*, chart_id: str, title: str, desc: str, items: Sequence[tuple[str, int, str]]) -> str:
    """Bars (label, count, colour) largest first, with the cumulative share as a line of labelled points."""
    items = sorted(((str(n), int(c), f) for n, c, f in items if c > 0), key=lambda i: -i[1])
    total = sum(c for _, c, _ in items)
    if not total:
        return _empty(chart_id, title, desc)
    n = len(items)
    right, top, plot_h = 48, 22, 220
    slot = max(48, min(110, 900 // n))
    # The first bar's slanted label reaches left of its bar: leave room for it (about 6 px per character).
    left = max(48, int(6.2 * len(items[0][0][:24]) * math.cos(math.radians(30)) - slot / 2 + 8))
    plot_w = slot * n
    width = left + plot_w + right
    height = top + plot_h + 96
    parts = _open(chart_id, width, height, title, desc)
    vmax = _nice_max(items[0][1])
    _axis(parts, left=left, top=top, width=plot_w, height=plot_h, vmax=vmax)
    for k in range(5):  # the right axis: cumulative %
        y = top + plot_h - plot_h * k / 4
        parts.append(f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" fill="{MUTED}">{25 * k} %</text>')
    bar_w = slot * 0.7
    points = []
    cumulative = 0
    for k, (name, count, fill) in enumerate(items):
        x = left + k * slot + (slot - bar_w) / 2
        h = plot_h * count / vmax
        y = top + plot_h - h
        cumulative += count
        share = 100.0 * cumulative / total
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{colour(fill)}">'
            f"<title>{esc(name)}: {count}</title></rect>"
        )
        parts.append(
            f'<text x="{x + bar_w / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-weight="600" '
            f'fill="{INK}"{HALO}>{count}</text>'
        )
        lx, ly = left + k * slot + slot / 2, top + plot_h + 14
        parts.append(
            f'<text x="{lx:.1f}" y="{ly}" text-anchor="end" font-size="11" fill="{INK}" '
            f'transform="rotate(-30 {lx:.1f} {ly})">{esc(name[:24])}</text>'
        )
        points.append((lx, top + plot_h - plot_h * share / 100, share))
    path = " ".join(f"{'M' if k == 0 else 'L'}{x:.1f},{y:.1f}" for k, (x, y, _) in enumerate(points))
    parts.append(f'<path d="{path}" fill="none" stroke="{INK}" stroke-width="2" stroke-dasharray="5 3"/>')
    for x, y, share in points:
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#fff" stroke="{INK}" stroke-width="1.5"/>')
        parts.append(
            f'<text x="{x + 6:.1f}" y="{y - 6:.1f}" font-size="10" fill="{INK}"{HALO}>{round(share, 1):g} %</text>'
        )
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{INK}"/>')
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="11" fill="{MUTED}">Bars: defects per type. '
        f"Dashed line: cumulative share of all {total} defects.</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def proportion_bars(
    *, chart_id: str, title: str, desc: str, rows: Sequence[tuple[str, Sequence[tuple[str, int, str]]]]
) -> str:
    """One 100 % horizontal bar per row (label, [(part, count, colour)]), e.g. the machine's verdicts and the
    review outcomes; every part is labelled with its count and share in a line under its bar."""
    if not any(c for _, parts in rows for _, c, _ in parts):
        return _empty(chart_id, title, desc)
    left, bar_w, bar_h, row_h = 110, 520, 26, 62
    width, height = left + bar_w + 16, 10 + row_h * len(rows)
    out = _open(chart_id, width, height, title, desc)
    for r, (label, parts) in enumerate(rows):
        y = 10 + r * row_h
        total = sum(c for _, c, _ in parts)
        out.append(
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end" font-weight="600" fill="{INK}">{esc(label)}</text>'
        )
        x = float(left)
        captions = []
        for name, count, fill in parts:
            share = 100.0 * count / total if total else 0.0
            captions.append(f"{name} {count} ({round(share, 1):g} %)")
            if not count:
                continue
            w = bar_w * count / total
            out.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour(fill)}" stroke="#fff">'
                f"<title>{esc(label)}: {esc(name)} {count}</title></rect>"
            )
            if w >= 28:
                out.append(
                    f'<text x="{x + w / 2:.1f}" y="{y + 17}" text-anchor="middle" font-size="11" '
                    f'fill="{_text_colour(fill)}">{count}</text>'
                )
            x += w
        out.append(
            f'<text x="{left}" y="{y + bar_h + 16}" font-size="11" fill="{MUTED}">{esc(" · ".join(captions))}</text>'
        )
    out.append("</svg>")
    return "".join(out)
