"""One self-contained HTML page: plotly.js is inlined once, so the page needs no network.

Every user-supplied string is escaped with :func:`html.escape` before it reaches the page.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from transferlab.store.atomic import write_text

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1150px;
color:#1d1d1f;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}th{background:#f5f5f7}
td:first-child,th:first-child{text-align:left}.note{color:#444;max-width:900px}
.flag{color:#b00020;font-weight:600}.tablewrap{overflow-x:auto;max-width:100%}
figure{margin:0 0 1rem 0}figcaption{color:#555;font-size:.9rem}
"""


# Collects JavaScript errors into the page itself, so a headless browser test can read them back.
_ERROR_HOOK = (
    "window.addEventListener('error',function(e){var d=document.getElementById('tl-js-errors');"
    "var m=(e&&e.message)?e.message:String(e);if(d){d.textContent+=m+'\\n';d.style.display='block';}"
    "else{(window.__tlErrors=window.__tlErrors||[]).push(m);}});"
)


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if x != x:
            return "nan"
        return f"{x:.4g}"
    if x is None:
        return "—"
    return str(x)


class Page:
    """A report page: add sections, figures and tables, then :meth:`write`."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []
        self._n_figs = 0

    def heading(self, text: str) -> Page:
        self._parts.append(f"<h2>{esc(text)}</h2>")
        return self

    def text(self, text: str, cls: str = "note") -> Page:
        self._parts.append(f'<p class="{esc(cls)}">{esc(text)}</p>')
        return self

    def figure(self, fig: go.Figure, caption: str = "") -> Page:
        self._n_figs += 1
        div_id = f"fig{self._n_figs}"
        spec = pio.to_json(fig, validate=False)
        self._parts.append(
            f'<figure><div id="{div_id}" class="plotly-fig" style="width:100%;height:{_height(fig)}px"></div>'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
            f"<script>(function(){{var s={_script_safe(spec)};"
            f"Plotly.newPlot('{div_id}',s.data,s.layout,{{responsive:true,displaylogo:false}});}})();</script>"
        )
        return self

    def table(self, rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None) -> Page:
        rows = list(rows)
        if not rows:
            return self.text("(no rows)")
        cols = list(columns) if columns is not None else list(rows[0])
        head = "".join(f"<th>{esc(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
        )
        # a wide table scrolls inside its own box instead of running off the page
        self._parts.append(f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                           "</table></div>")
        return self

    def raw(self, markup: str) -> Page:
        """Markup the caller built itself (a widget), added as it is: every user string in it must already be
        escaped with :func:`esc`, and JSON inside a script made safe with :func:`script_json`."""
        self._parts.append(markup)
        return self

    def key_values(self, items: dict[str, Any]) -> Page:
        return self.table([{"quantity": k, "value": v} for k, v in items.items()])

    def render(self) -> str:
        stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{esc(self.title)}</title><style>{_STYLE}</style>"
            f"<script>{_ERROR_HOOK}</script><script>{get_plotlyjs()}</script></head><body>"
            "<pre id='tl-js-errors' style='display:none'></pre>"
            f"<h1>{esc(self.title)}</h1><p class='sub'>{esc(self.subtitle)} · generated {stamp} by transferlab</p>"
            + "\n".join(self._parts)
            + "</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        write_text(p, self.render())
        return p


def _height(fig: go.Figure) -> int:
    h = fig.layout.height
    return int(h) if h else 450


def script_json(obj: Any) -> str:
    """Data for a <script>: JSON (NaN/Inf as null) that cannot close the tag."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and x != x or x in (float("inf"), float("-inf")):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return _script_safe(json.dumps(clean(obj), allow_nan=False, default=str))


def _script_safe(spec: str) -> str:
    """JSON inside <script>: keep '</script>' and HTML comment openers from closing the tag."""
    json.loads(spec)  # must already be valid JSON
    return spec.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
