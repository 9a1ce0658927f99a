"""Pictures and pages a person looks at after a stage: plots, contact sheets, HTML.

Every stage ends with a `report.html` in its folder: the numbers of
`metrics.json` as tables, plus PNG plots and contact sheets, linked by
relative paths so the folder can be zipped or opened from a Kaggle output.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")  # files only; never open a window (servers, CI, kernels)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lib.common.io import atomic_path, write_png, write_text_atomic  # noqa: E402

THUMB = 128  # contact-sheet cell size in pixels
SHEET_COLUMNS = 8  # cells per contact-sheet row
CLASS_COLOURS = {"tumor": "tab:red", "no_tumor": "tab:blue", "unknown": "tab:grey"}


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save a matplotlib figure atomically and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def cdf_plot(hists: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """Cumulative intensity distributions, one curve per (class, channel).

    `hists` maps a legend name ('tumor', 'no_tumor R', ...) to a 256-bin count.
    Why CDFs: two classes whose intensity curves differ before any model
    trains are a warning that a model may learn the acquisition, not the tumour.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, hist in hists.items():
        total = float(hist.sum())
        if total <= 0:
            continue
        label = name.split()[0]
        style = {"R": ":", "G": "--", "B": "-."}.get(name.split()[-1], "-")
        ax.plot(np.cumsum(hist) / total, style, color=CLASS_COLOURS.get(label, None), label=name)
    ax.set(xlabel="intensity", ylabel="fraction of pixels at or below", title=title, xlim=(0, 255), ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def thumbnail(pixels: np.ndarray, size: int = THUMB) -> np.ndarray:
    """RGB uint8 size x size: the image fitted inside, letter-boxed on black."""
    rgb = pixels if pixels.ndim == 3 else cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    cell = np.zeros((size, size, 3), np.uint8)
    y, x = (size - small.shape[0]) // 2, (size - small.shape[1]) // 2
    cell[y : y + small.shape[0], x : x + small.shape[1]] = small
    return cell


def outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], thickness: int = 1) -> np.ndarray:
    """Draw the outer border of a mask on an RGB image, in place (masks read better as outlines)."""
    contours, _ = cv2.findContours(np.asarray(mask).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(rgb, contours, -1, colour, thickness)
    return rgb


def caption(cell: np.ndarray, text: str, colour: tuple[int, int, int] = (255, 255, 0)) -> np.ndarray:
    """Write a short caption in the top-left corner of a thumbnail."""
    out = cell.copy()
    cv2.putText(out, text[:22], (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(out, text[:22], (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, colour, 1, cv2.LINE_AA)
    return out


def contact_sheet(cells: Sequence[np.ndarray], path: Path, columns: int = SHEET_COLUMNS) -> Path:
    """Tile equally sized RGB cells into one PNG, row by row."""
    rows = -(-len(cells) // columns)
    h, w = cells[0].shape[:2]
    sheet = np.full((rows * h, columns * w, 3), 40, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = cell
    write_png(path, sheet)
    return path


def contact_sheets(rows: Iterable[Any], cells_of: Callable[[Any], list[np.ndarray]], folder: Path,
                   per_sheet: int, max_sheets: int) -> list[Path]:
    """folder/contact_NNN.png: the cells of `per_sheet` rows a sheet, for at most `max_sheets` sheets.

    Why capped: a QC sheet is for a look at a sample, and hundreds of sheets would only slow the stage.
    """
    rows = list(rows)[: per_sheet * max_sheets]
    return [contact_sheet([cell for row in rows[start : start + per_sheet] for cell in cells_of(row)],
                          folder / f"contact_{start // per_sheet:03d}.png")
            for start in range(0, len(rows), per_sheet)]


def table_html(rows: Sequence[Mapping[str, object]]) -> str:
    """A plain HTML table from a list of dicts with the same keys."""
    if not rows:
        return "<p>(none)</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(k, '')))}</td>" for k in keys) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(table: Any) -> str:
    """A DataFrame as a GitHub markdown table (values as str(); round floats first)."""
    header = "| " + " | ".join(table.columns) + " |\n| " + " | ".join("---" for _ in table.columns) + " |\n"
    return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in table.itertuples(index=False))


def dict_table_html(values: Mapping[str, object]) -> str:
    """Two-column table of a flat mapping (nested mappings shown inline)."""
    return table_html([{"name": k, "value": v} for k, v in values.items()])


def html_page(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """Write `report.html`: a title, then (heading, HTML body) sections.

    Images are referenced by paths relative to the page, so the folder stays
    self-contained.
    """
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" for h, body in sections]
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 4px 0; }}
.note {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">Research and education software, not a medical device.</p>
{chr(10).join(parts)}
</body></html>
"""
    write_text_atomic(path, page)
    return path


def img_html(page_dir: Path, image: Path, alt: str = "") -> str:
    rel = os.path.relpath(image, page_dir)
    return f'<img src="{html.escape(rel)}" alt="{html.escape(alt or image.stem)}">'
