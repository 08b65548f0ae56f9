"""Open a report in headless Chromium and read back what rendered and any JavaScript errors."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=8000", "--dump-dom",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    raise AssertionError(
        "headless Chromium is required for the report tests: `apt-get install chromium` "
        "(make test installs it)"
    )


def render(html_path: Path) -> dict:
    """Returns {'figures': n figure divs, 'rendered': n with a plotly SVG, 'errors': JS error text}."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", Path(html_path).resolve().as_uri()],
            capture_output=True, text=True, timeout=120,
        )
    dom = proc.stdout
    figures = re.findall(r'<div id="fig\d+" class="plotly-fig[^"]*"(.*?)</figure>', dom, flags=re.S)
    rendered = sum(1 for f in figures if "main-svg" in f)
    m = re.search(r"<pre id=\"tl-js-errors\"[^>]*>(.*?)</pre>", dom, flags=re.S)
    return {"figures": len(figures), "rendered": rendered, "errors": (m.group(1) if m else "<no error box>"),
            "dom_bytes": len(dom)}
