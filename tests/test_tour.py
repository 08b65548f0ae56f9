"""`transferlab tour` on the test-sized presets (--scale micro): the JSON contract, the resume (a second tour makes
no run and appends no metric), a failing section that keeps the others and exits 1, bad input, and the page in
headless Chromium (no JavaScript error, every figure drawn, the slider names another phase, the budget input
recomputes the frontier exactly as the fit layer does)."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.browser import CHROMIUM_FLAGS, chromium_path
from transferlab.cli.main import main
from transferlab.tour.sections import SECTIONS, scales, section_names


def _tour(capsys, store: Path, *args: str) -> tuple[int, dict]:
    code = main(["tour", "--scale", "micro", "--store", str(store), "--json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _store_state(store: Path) -> dict[str, int]:
    """Every run folder and the size of its metrics log: a tour that reran or resumed anything changes it."""
    state = {}
    for cfg in store.glob("*/*/config.yaml"):
        m = cfg.parent / "metrics.jsonl"
        state[str(cfg.parent.relative_to(store))] = m.stat().st_size if m.exists() else -1
    return state


@pytest.fixture(scope="module")
def toured(tmp_path_factory):
    """One micro tour from an empty store (shared by the tests below; about half a minute on one core)."""
    store = tmp_path_factory.mktemp("tour") / "store"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["tour", "--scale", "micro", "--store", str(store), "--json"])
    return store, code, json.loads(buf.getvalue())


def test_the_declaration_gives_the_choices():
    assert section_names() == ["scale", "sizing", "grok", "w2s", "eft", "correlations", "monitors"]
    assert {"mini", "micro"} <= set(scales())
    grok = next(s for s in SECTIONS if s.name == "grok")
    cmds = grok.commands("mini")
    assert cmds[0] == "transferlab grok --preset mini"
    assert cmds[1].startswith("transferlab sweep grok --preset default") and "--grid weight_decay=1,2,4" in cmds[1]
    assert "--seeds 2" in cmds[1]


def test_json_contract_and_every_section_done(toured):
    store, code, res = toured
    assert code == 0, res
    assert set(res) >= {"page", "wall_s", "sections"}
    assert [s["name"] for s in res["sections"]] == section_names()
    for s in res["sections"]:
        assert s["status"] == "done", s
        assert s["seconds"] >= 0
    assert res["wall_s"] >= sum(s["seconds"] for s in res["sections"]) * 0.99
    page = Path(res["page"])
    html = page.read_text()
    assert page.is_file() and "<script src=" not in html  # offline: plotly is inlined
    for s in SECTIONS:  # each section: its claim, its commands, a link to a full report
        m = re.search(rf'<section class="tour-sec" id="tour-{s.name}".*?</section>', html, flags=re.S)
        assert m, s.name
        body = m.group(0)
        assert "The claim." in body and 'class="tour-cmd"' in body, s.name
        assert "Full reports:" in body, s.name
        for cmd in s.commands("micro"):
            assert cmd.replace("'", "&#x27;") in body, (s.name, cmd)


def test_a_second_tour_reuses_everything(toured, capsys):
    store, _, _ = toured
    before = _store_state(store)
    assert len(before) >= 10
    code, res = _tour(capsys, store)
    assert code == 0 and not res["failed"]
    assert _store_state(store) == before  # no new run folder, no metric appended anywhere


def test_a_failing_section_keeps_the_others(toured, capsys, monkeypatch):
    from transferlab.studies.w2s.study import W2SStudy

    store, _, _ = toured

    def boom(self, cfg, store, options=None):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(W2SStudy, "run", boom)
    out = store.parent / "partial.html"
    code, res = _tour(capsys, store, "--sections", "grok,w2s", "--sections", "monitors", "--out", str(out))
    assert code == 1
    rows = {s["name"]: s for s in res["sections"]}
    assert list(rows) == ["grok", "w2s", "monitors"]  # the chapter's order, whatever order was asked
    assert rows["grok"]["status"] == "done" and rows["monitors"]["status"] == "done"
    assert rows["w2s"]["status"] == "failed" and "injected failure" in rows["w2s"]["error"]
    assert rows["w2s"]["rerun"].startswith("transferlab tour --sections w2s --scale micro")
    assert res["failed"] == ["w2s"]
    html = out.read_text()
    assert "This section failed" in html and "injected failure" in html
    assert 'id="tour-grok-phase"' in html  # the grok section kept its widget


def test_print_plan_runs_and_writes_nothing(toured, capsys, tmp_path):
    """--print-plan validates every step's config and says which runs the store holds, without running."""
    store, _, _ = toured
    before = _store_state(store)
    code, plan = _tour(capsys, store, "--print-plan")
    assert code == 0 and _store_state(store) == before
    assert [s["name"] for s in plan["sections"]] == section_names()
    steps = {st["command"]: st["done"] for s in plan["sections"] for st in s["steps"]}
    for s in SECTIONS:
        for cmd in s.commands("micro"):
            assert cmd in steps, cmd
    assert steps["transferlab grok --preset micro"] is True  # done by the tour above
    sweep = next(c for c in steps if c.startswith("transferlab sweep"))
    assert steps[sweep] is None  # a sweep is only listed
    empty = tmp_path / "empty"
    code, plan = _tour(capsys, empty, "--print-plan")
    assert code == 0 and not empty.exists()  # nothing created
    assert all(st["done"] in (False, None) for s in plan["sections"] for st in s["steps"])
    assert any(st["done"] is False for s in plan["sections"] for st in s["steps"])


def test_bad_sections_and_scale_exit_2_with_a_suggestion(tmp_path, capsys):
    assert main(["tour", "--sections", "w2s,monitor", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown section 'monitor'" in err[0] and "did you mean 'monitors'" in err[0]
    assert main(["tour", "--scale", "mimi", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown scale 'mimi'" in err[0] and "did you mean 'mini'" in err[0]
    assert not (tmp_path / "s" / "tour").exists()  # nothing ran


_PROBE = """<script>
window.addEventListener('load',function(){setTimeout(function(){var o={};
 var s=document.getElementById('tour-grok-step'),l=document.getElementById('tour-grok-phase');
 s.value=0;s.dispatchEvent(new Event('input'));o.first=l.textContent;
 s.value=s.max;s.dispatchEvent(new Event('input'));o.last=l.textContent;
 var b=document.getElementById('tour-budget');o.N22=window.__tourPlan.N;o.No22=window.__tourPlan.No;
 b.value='24';b.dispatchEvent(new Event('input'));o.N24=window.__tourPlan.N;
 o.plan=document.getElementById('tour-plan').textContent;
 var e=document.getElementById('tour-eft-beta'),eo=document.getElementById('tour-eft-out');
 e.value=0;e.dispatchEvent(new Event('input'));o.eft0=eo.textContent;
 e.value=e.max;e.dispatchEvent(new Event('input'));o.eftMax=eo.textContent;
 var figs=document.querySelectorAll('div.plotly-fig');o.figures=figs.length;o.drawn=0;
 figs.forEach(function(f){if(f.querySelector('.main-svg'))o.drawn++;});
 var p=document.createElement('pre');p.id='tour-probe';p.textContent=JSON.stringify(o);document.body.appendChild(p);
},500);});
</script>"""


def test_the_page_in_headless_chromium(toured):
    from transferlab.fit.chinchilla import ChinchillaLaw
    from transferlab.fit.sizing import compute_optimal, optimal_loss, overtrain
    from transferlab.store import Store
    from transferlab.tour.extras import chinchilla_config

    store, _, res = toured
    page = Path(res["page"])
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", probe.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
    errors = re.search(r'<pre id="tl-js-errors"[^>]*>(.*?)</pre>', dom, flags=re.S)
    assert errors is not None and errors.group(1) == "", errors and errors.group(1)
    got = json.loads(re.search(r'<pre id="tour-probe">(.*?)</pre>', dom, flags=re.S).group(1).replace("&quot;", '"'))
    # every figure present and drawn: one per section at least, the three widgets among them
    assert got["figures"] >= len(SECTIONS) and got["drawn"] == got["figures"], got
    # the slider moves through the phases: it starts memorizing and ends in a later phase
    assert got["first"] == "memorizing" and got["last"] in ("circuit formation", "generalized"), got
    # the budget input recomputes the frontiers, and the page's JavaScript agrees with the fit layer
    fit = Store(store).done("fit", chinchilla_config("micro"))
    law = ChinchillaLaw(**{k: fit[k] for k in ("E", "A", "B", "alpha", "beta")})
    n22 = float(compute_optimal(law, 1e22)[0])
    assert got["N22"] == pytest.approx(n22, rel=1e-9)
    assert got["No22"] == pytest.approx(overtrain(law, float(optimal_loss(law, 1e22)), 1e12).N, rel=1e-6)
    assert got["N24"] == pytest.approx(float(compute_optimal(law, 1e24)[0]), rel=1e-9) and got["N24"] > 10 * n22
    assert "inference-aware" in got["plan"]
    assert got["eft0"].startswith("β = 0") and got["eft0"] != got["eftMax"]


def test_progress_bars_join_the_tour_display():
    """rich allows one live display: inside the tour's, every study's bar is a row of it, removed when done."""
    from transferlab.core import progress

    was = progress.is_quiet()
    progress.set_quiet(False)
    try:
        with progress.progress_group() as group:
            group.add_task("tour", total=10, info="")
            with progress.progress_bar("a study's steps", total=5) as bar:
                bar.update(advance=2, loss=0.5)
                assert [t.description for t in group.tasks] == ["tour", "a study's steps"]
                assert group.tasks[1].completed == 2
            assert [t.description for t in group.tasks] == ["tour"]
        with progress.progress_bar("alone", total=1) as bar:  # outside a group: its own display, as before
            bar.update(advance=1)
    finally:
        progress.set_quiet(was)
