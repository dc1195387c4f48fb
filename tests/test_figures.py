"""Every committed figure prints legibly at its stated width: its saved size is one column (3.3 in) or the text
width (7 in), every font in its PDF is at least 7 pt at that size, and a caption file lies beside it."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest

from normexp import plotting

ROOT = Path(__file__).resolve().parents[1]
FIGURES = sorted((ROOT / "results").rglob("*.pdf"))
POINTS_PER_INCH = 72


def pdf_page_and_fonts(path: Path) -> tuple[tuple[float, float], list[float]]:
    """The page size in points and the size of every ``Tf`` (set font) operator in the PDF's content streams."""
    data = path.read_bytes()
    box = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", data)
    sizes = []
    # Not "\r?\nendstream": compressed data may end in a \r byte; what follows the zlib stream is ignored.
    for stream in re.findall(rb"stream\r?\n(.*?)\nendstream", data, flags=re.S):
        try:
            text = zlib.decompressobj().decompress(stream)
        except zlib.error:
            continue  # an embedded font or image, not a content stream
        sizes += [float(size) for size in re.findall(rb"/\S+ ([\d.]+) Tf", text)]
    return (float(box[1]), float(box[2])), sizes


def png_size(path: Path) -> tuple[int, int]:
    """Width and height in pixels, from the PNG header."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_there_are_committed_figures() -> None:
    assert len(FIGURES) >= 10


@pytest.mark.parametrize("pdf", FIGURES, ids=lambda p: str(p.relative_to(ROOT / "results")))
def test_figure_prints_at_its_width_with_fonts_of_7pt_or_more(pdf: Path) -> None:
    (width, height), fonts = pdf_page_and_fonts(pdf)
    widths = {round(w * POINTS_PER_INCH, 1) for w in plotting.WIDTHS.values()}
    assert round(width, 1) in widths, f"{pdf.name} is {width / POINTS_PER_INCH:.2f} in wide, not 3.3 or 7 in"
    assert height <= 9.5 * POINTS_PER_INCH, f"{pdf.name} is taller than a page"
    assert fonts, f"{pdf.name} has no text"
    assert min(fonts) >= plotting.MIN_FONT_PT, f"{pdf.name} has a {min(fonts):g} pt font"
    png = pdf.with_suffix(".png")
    assert png_size(png) == (
        round(width / POINTS_PER_INCH * plotting.DPI),
        round(height / POINTS_PER_INCH * plotting.DPI),
    )
    assert pdf.with_name(pdf.stem + plotting.CAPTION_SUFFIX).exists(), f"{pdf.name} has no caption file"


def test_the_font_check_sees_small_fonts(tmp_path: Path) -> None:
    fig, (ax,) = plotting.figure(width="column")
    ax.set_title("too small", fontsize=5)
    plotting.save(fig, tmp_path, "small")
    (width, _), fonts = pdf_page_and_fonts(tmp_path / "small.pdf")
    assert width == pytest.approx(plotting.COLUMN_WIDTH * POINTS_PER_INCH)
    assert min(fonts) == 5 and max(fonts) >= plotting.MIN_FONT_PT


def test_paired_norms_differ_in_more_than_colour() -> None:
    for a, b in (("gn", "gn+ws"), ("bn", "none"), ("bn", "noisy_bn"), ("none", "noise"), ("bcn+ws", "gn+ws")):
        first, second = plotting.style(a), plotting.style(b)
        assert first.linestyle != second.linestyle and first.marker != second.marker, (a, b)
    assert len({(s.color, str(s.linestyle), s.marker) for s in plotting.STYLES.values()}) == len(plotting.STYLES)
