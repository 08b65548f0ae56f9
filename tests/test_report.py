"""The report layer: one self-contained page, escaped strings, figures that render in Chromium."""

from __future__ import annotations

import plotly.graph_objects as go

from tests.browser import render
from transferlab.report import Page


def _page(tmp_path, title="t"):
    page = Page(title, "subtitle")
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name="a"))
    page.heading("Figures").figure(fig, caption="a line").figure(go.Figure(go.Bar(x=["a"], y=[1])))
    page.table([{"name": "<b>x</b>", "value": 1.23456}])
    return page.write(tmp_path / "r.html")


def test_page_is_self_contained_and_escapes_user_strings(tmp_path):
    path = _page(tmp_path, title="<script>alert(1)</script>")
    html = path.read_text()
    assert "cdn" not in html.lower().split("<body>")[1][:2000]  # no CDN script in the body
    assert "<script src=" not in html  # nothing is fetched
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert html.count("Plotly.newPlot") == 2


def test_report_renders_in_headless_chromium(tmp_path):
    path = _page(tmp_path)
    out = render(path)
    assert out["figures"] == 2
    assert out["rendered"] == 2, out
    assert out["errors"] == "", out


def test_broken_figure_script_is_caught_by_the_browser_check(tmp_path):
    path = _page(tmp_path)
    html = path.read_text().replace("Plotly.newPlot('fig2'", "Plotly.noSuchFunction('fig2'")
    path.write_text(html)
    out = render(path)
    assert out["rendered"] == 1
    assert "noSuchFunction" in out["errors"]
