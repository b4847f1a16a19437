"""The HTML report in a real browser: headless Chromium (Debian's package) renders the
page and the screenshot shows the workflow graph and the chart. Skips with a reason
where no Chromium is installed (``apt-get install -y chromium``)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from analytics_data import DEC_START, NOV_START, load_known

from nodemeter_stream.analytics import html
from nodemeter_stream.analytics.report import collect

pytestmark = pytest.mark.clickhouse

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i : i + 3]) for r in rows for i in range(0, stride, bpp)]  # type: ignore[return-value]


def count(pixels: list[bytes], hex_colour: str, tolerance: int = 6) -> int:
    want = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(1 for px in pixels if all(abs(px[i] - want[i]) <= tolerance for i in range(3)))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install -y chromium")
def test_chromium_renders_graph_and_chart(ch: Any, tmp_path: Path) -> None:
    load_known(ch)
    report = collect(
        ch, tenant="acme", start=NOV_START, end=DEC_START,
        clock=lambda: datetime(2026, 12, 1, tzinfo=UTC),
    )  # fmt: skip
    page = tmp_path / "report.html"
    page.write_text(html.render(report), encoding="utf-8")
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1000,900", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists(), proc.stderr[-2000:]
    width, height, pixels = read_png(shot.read_bytes())
    assert (width, height) == (1000, 900)
    # the most expensive node (gpu.rerank) is a dark red disc of radius 48 px: ~7,200 px
    assert count(pixels, "#bd0026") > 3000
    # the chart's first series (gpu.rerank) is drawn as bars
    assert count(pixels, html.PALETTE[0]) > 1000
    # and most of the page is background, not an error page
    assert count(pixels, "#ffffff") > width * height // 2
