"""The tour's one declaration: its sections in the chapter's order, each with the study runs it needs.

Everything else follows from ``SECTIONS``: the ``--sections`` choices and help, the page's order, the command
printed under each section to reproduce it, and the ``--scale`` choices (the presets every study a section runs
has: ``mini``, the ones to run first, and ``micro``, test-sized).

A section is a list of :class:`Step`s (study runs or sweeps, driven through the registry, so each study's own
run cache decides what is reused) plus, for the two sections that are not a study's preset, one ``extra``
function (the Chinchilla fit on Epoch's points; a zoo pretraining run with the plasticity monitors)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferlab.store import Store

SCALE = "<scale>"  # a Step's preset: the tour's --scale (mini, or micro in tests)


@dataclass(frozen=True)
class Step:
    """One study run (or sweep, with ``grid``) a section needs. ``preset`` SCALE is the tour's scale;
    ``overrides`` apply at every scale, ``at_scale[scale]`` on top of them at that scale only."""

    key: str  # the name of its result in the section's data
    study: str  # the registry's CLI name
    preset: str | Mapping[str, str] = SCALE  # a preset, or one per scale (the scale's own where none is named)
    overrides: tuple[str, ...] = ()
    at_scale: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    grid: Mapping[str, tuple[Any, ...]] | None = None  # a sweep over these config keys
    seeds: int = 1  # a sweep's seeds per point
    why: str = ""  # what this run is for, on the page

    def preset_for(self, scale: str) -> str:
        if isinstance(self.preset, Mapping):
            return self.preset.get(scale, scale)
        return scale if self.preset == SCALE else self.preset

    def overrides_for(self, scale: str) -> list[str]:
        return [*self.overrides, *self.at_scale.get(scale, ())]

    def command(self, scale: str) -> str:
        """The command that runs exactly this step (the page prints it)."""
        from transferlab.studies.registry import get_study

        study = get_study(self.study)
        words = ["transferlab"] + (["sweep", study.command] if self.grid else study.cli_words())
        words += ["--preset", self.preset_for(scale)]
        for o in self.overrides_for(scale):
            words += ["--set", _quote(o)]
        if self.grid:
            for k, vals in self.grid.items():
                words += ["--grid", f"{k}={','.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vals)}"]
            if self.seeds > 1:
                words += ["--seeds", str(self.seeds)]
        return " ".join(words)


@dataclass(frozen=True)
class Context:
    store: Store
    scale: str
    zoo_root: Path | None = None


@dataclass(frozen=True)
class Section:
    """One section of the chapter: its name (for ``--sections``; its page builder in tour/page.py has the same
    name), title, the study runs it needs, an optional ``extra`` computation, and the seconds it took from an empty
    store on 2 cores at each scale (the ETA on its progress bar; measured, docs/RESULTS.md "transferlab tour")."""

    name: str
    title: str
    steps: tuple[Step, ...]
    expected_s: Mapping[str, float]
    extra: Callable[[Context], dict[str, Any]] | None = None
    extra_command: Callable[[str], str] | None = None

    @property
    def studies(self) -> list[str]:
        return list(dict.fromkeys(s.study for s in self.steps))

    def commands(self, scale: str) -> list[str]:
        cmds = [s.command(scale) for s in self.steps]
        if self.extra_command is not None:
            cmds.append(self.extra_command(scale))
        return cmds


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


# ---- the two computations that are not a study preset (see tour/extras.py) ----
def _chinchilla(ctx: Context) -> dict[str, Any]:
    from transferlab.tour.extras import chinchilla

    return chinchilla(ctx)


def _chinchilla_command(scale: str) -> str:
    from transferlab.tour.extras import chinchilla_command

    return chinchilla_command(scale)


def _monitors(ctx: Context) -> dict[str, Any]:
    from transferlab.tour.extras import monitors

    return monitors(ctx)


def _monitors_command(scale: str) -> str:
    return f"transferlab tour --sections monitors --scale {scale}"


GROK_SMALL = ("monitor_every=0", "progress_measures=false")  # the delay-law sweep and the diagnosis: phases only

SECTIONS: tuple[Section, ...] = (
    Section(
        "scale", "Scale multiplies data",
        (Step("transfer", "transfer", why="scratch and fine-tuned runs on code for each pretrained size"),),
        expected_s={"mini": 100, "micro": 10}),
    Section(
        "sizing", "Sizing and over-training", (), expected_s={"mini": 3, "micro": 2},
        extra=_chinchilla, extra_command=_chinchilla_command),
    Section(
        "grok", "Grokking",
        (Step("run", "grok", why="the phase transition: the chapter's figure, step by step"),
         Step("delay", "grok", preset={"mini": "default"}, overrides=("stop_after_generalized=100", *GROK_SMALL),
              at_scale={"mini": ("steps=3000", "eval_every=20")},
              grid={"weight_decay": (1.0, 2.0, 4.0)}, seeds=2,
              why="the delay law from a small stock sweep: weight decay 1, 2, 4 at the preset's lr, two seeds (the "
                  "second seed's trials held out); `sweep grok --plan delay-law` is the full one (10 points, "
                  "8,000 steps)"),
         Step("stalled", "grok", preset={"mini": "default"}, overrides=("weight_decay=0.05", *GROK_SMALL),
              at_scale={"mini": ("steps=1200", "eval_every=20"), "micro": ("steps=300",)},
              why="a run that does not grok: the same MLP with 20x less weight decay (0.05), stopped early")),
        expected_s={"mini": 185, "micro": 7}),
    Section(
        "w2s", "Weak-to-strong generalization",
        (Step("w2s", "w2s", overrides=("losses=[xent,confidence,logconf]",),
              why="floor, ceiling and three students: naive cross-entropy, the chapter's confidence loss and Burns "
                  "et al.'s auxiliary confidence loss"),),
        expected_s={"mini": 30, "micro": 1}),
    Section(
        "eft", "Emulated fine-tuning",
        (Step("eft", "eft-demo", why="two bases, both fine-tuned, and their emulated mixes"),),
        expected_s={"mini": 100, "micro": 4}),
    Section(
        "correlations", "Cross-stage correlations",
        (Step("pairs", "correlate-zoo", at_scale={"micro": ("sizes=[xxs]", "mixtures=[100,50,0]")},
              why="zoo models before and after SFT, scored on the same benchmarks"),),
        expected_s={"mini": 45, "micro": 8}),
    Section(
        "monitors", "Monitoring plasticity", (), expected_s={"mini": 20, "micro": 2},
        extra=_monitors, extra_command=_monitors_command),
)


def section_names() -> list[str]:
    return [s.name for s in SECTIONS]


def get_section(name: str) -> Section:
    return next(s for s in SECTIONS if s.name == name)


def scales() -> list[str]:
    """The --scale choices: every preset name that each step of every section can run at (a step that names its
    own preset for a scale runs that one; the others run the scale's own preset, so their study must have it)."""
    from transferlab.studies.registry import get_study

    steps = [st for sec in SECTIONS for st in sec.steps]
    if not steps:
        return []
    candidates = get_study(steps[0].study).presets.names()
    return [c for c in candidates if all(st.preset_for(c) in get_study(st.study).presets.names() for st in steps)]
