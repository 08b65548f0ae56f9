"""The one shape every study has (the scikit-learn lesson): a name, a config class, presets, ``run``.

A study is a subclass of :class:`Study` registered in :mod:`transferlab.studies.registry`. The CLI, the
sweep runner and the store treat every study alike through it:

    study = get_study("w2s")                       # by CLI name or stored name, with typo suggestions
    cfg = study.make_config("quick", ["seeds=3"])  # defaults <- preset <- --set overrides, validated
    result = study.run(cfg, Store("runs"))         # -> StudyResult; result.to_json() is the --json contract
    study.done(cfg, store)                         # the finished run's summary, or None

``run(cfg, store, options)`` takes the config, the store and the run options: a :class:`RunOptions` (``report``:
write the HTML page; ``reporter``: where intermediate results go), or the study's subclass of it declared as
``options_cls`` with its own typed options (grokking's ``seeds``, the zoo studies' ``zoo_root``); the study's
command takes those fields as its own flags. A sweep calls ``run`` once per trial and tabulates
``trial_metrics(result)``. A study whose trials can train together (grokking's vmapped ensembles) overrides the
optional hooks ``group_key`` and ``run_group``; one that can report intermediate results to a Ray Tune scheduler
sets ``intermediate_metric`` and honours the ``reporter`` option.

Adding a study: a folder under ``transferlab/studies/`` with its config, its run and a ``study.py`` that
subclasses :class:`Study`, plus one line in the registry. docs/ARCHITECTURE.md has the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from transferlab.core.config import PresetRegistry, StudyConfig, resolve
from transferlab.store import Store
from transferlab.store.run import Run

Reporter = Callable[[dict[str, Any]], Any]  # a trial's intermediate result, e.g. {"step": 200, "val_acc": .6}


class RunOptions(BaseModel):
    """How to run a config (not what it is: nothing here enters the run id). Every study takes these; a study
    with options of its own subclasses this and declares it as ``options_cls``. A field's description is its
    command-line flag's help; ``json_schema_extra={"flags": [...]}`` names the flag(s) when the field's name is
    not the flag, and ``{"cli": False}`` keeps a field off the command line (the CLI sets it itself)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    report: bool = Field(True, description="Write the run's HTML report.", json_schema_extra={"cli": False})
    reporter: Reporter | None = Field(None, description="Receives intermediate results during the run (Ray Tune).",
                                      json_schema_extra={"cli": False})


class ZooOptions(RunOptions):
    """The run options of a study that trains on (or reads models from) the model zoo."""

    zoo_root: Path | None = Field(None, description="Zoo folder (default: <store>/zoo).",
                                  json_schema_extra={"flags": ["--zoo"]})


@dataclass(frozen=True)
class Line:
    """One line a study's command prints for a result (``result_lines``): a plain ``str`` is a result on stdout;
    a Line with ``markup`` is rich markup (user strings escaped) on stdout, one with ``note`` a note on stderr."""

    text: str
    markup: bool = False
    note: bool = False


C = TypeVar("C", bound=StudyConfig)
O = TypeVar("O", bound=RunOptions)  # noqa: E741


@dataclass
class StudyResult(Mapping[str, Any]):
    """What a study's ``run`` returns: the summary it stored (``data``), read like the dict it replaces, and
    ``to_json()``, the stable ``--json`` contract of that study's command."""

    study: str
    data: dict[str, Any]
    contract: dict[str, Any] | None = None  # the --json view when it differs from the summary itself
    run_id: str | None = None
    report: str | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def to_json(self) -> dict[str, Any]:
        return dict(self.contract if self.contract is not None else self.data)


class Study(Generic[C, O]):
    """Base class of every study. Subclasses set the class attributes and implement ``run``:
    ``class GrokStudy(Study[GrokConfig, GrokOptions])``."""

    command: ClassVar[str]  # the CLI name: transferlab <command> / transferlab sweep <command>
    name: ClassVar[str]  # the store's folder for its runs (runs/<name>/<config hash>/); the only place it is spelled
    cli: ClassVar[str | None] = None  # the command's words when not `transferlab <command>` (EFT demo: "eft demo")
    aliases: ClassVar[tuple[str, ...]] = ()  # other spellings people type (the stored name is always accepted)
    summary: ClassVar[str]  # one line for listings
    config_cls: ClassVar[type[StudyConfig]]
    options_cls: ClassVar[type[RunOptions]] = RunOptions  # the run options; its fields are the command's flags
    default_preset: ClassVar[str | None] = "default"
    intermediate_metric: ClassVar[str | None] = None  # reported during a trial (Ray Tune schedulers)
    trial_config_keys: ClassVar[tuple[str, ...]] = ()  # config values every sweep row carries, swept or not
    # stored names of the runs it makes for its own use (zoo models, cached features, baselines): `runs ls` hides
    # them unless --all
    child_studies: ClassVar[tuple[str, ...]] = ()
    sweep_plans: ClassVar[Mapping[str, Any]] = {}  # named sweeps: `transferlab sweep <command> --plan NAME`
    sweep_prefix: ClassVar[str | None] = None  # sweep names start with it (default "sweep-<command>-")

    flags_cls: ClassVar[type[BaseModel] | None] = None  # the command's shortcuts for config keys (w2s --task)
    live_mirrors: ClassVar[bool] = False  # its runs log metrics as they train: its command takes --mirror
    cli_help: ClassVar[str | None] = None  # the command's --help (default: ``summary``)

    presets: ClassVar[PresetRegistry]

    def result(self, summary: dict[str, Any], contract: dict[str, Any] | None = None) -> StudyResult:
        """The typed result of a summary that carries its ``run_id`` and ``report``."""
        return StudyResult(self.name, summary, contract=contract, run_id=summary.get("run_id"),
                           report=summary.get("report"))

    # ---- the protocol -------------------------------------------------------
    def make_config(self, preset: str | None = None, overrides: list[str] | None = None,
                    config_file: str | Path | None = None, values: dict[str, Any] | None = None) -> StudyConfig:
        """defaults <- preset (the study's default when none is named) <- YAML file <- overrides <- values."""
        name = preset if preset is not None else self.default_preset
        return resolve(self.config_cls, presets=self.presets, preset=name, config_file=config_file,
                       overrides=overrides, extra=values)

    def options(self, options: RunOptions | None = None, **values: Any) -> O:
        """The run options as this study's ``options_cls`` (its defaults when none are given), ``values`` on top."""
        if isinstance(options, self.options_cls) and not values:
            return options  # type: ignore[return-value]
        base = options.model_dump(exclude_unset=True) if options is not None else {}
        return self.options_cls(**{**base, **values})  # type: ignore[return-value]

    def run(self, cfg: C, store: Store, options: O | None = None) -> StudyResult:
        """Run (or reuse) one config; ``options`` default to ``options_cls()``."""
        raise NotImplementedError

    def done(self, cfg: C, store: Store) -> dict[str, Any] | None:
        """The summary of this config's finished run, or None (the store answers for every study)."""
        return store.done(self.name, cfg)

    def trial_metrics(self, result: StudyResult) -> dict[str, Any]:
        """The scalar results a sweep tabulates for one trial (default: the summary's top-level numbers)."""
        return scalars(result.data)

    # ---- what its command prints (the CLI builds every study's command from these) ----
    def result_lines(self, result: StudyResult) -> list[str | Line]:
        """What the command prints for a result without --json (default: the report's path)."""
        return [str(result.report)] if result.report else []

    def failure(self, result: StudyResult) -> str | None:
        """Why the command must exit 1 although the run finished and its result was printed (None: it succeeded)."""
        return None

    def config_values(self, flags: BaseModel, *, listing: bool) -> dict[str, Any]:
        """The config values the command's ``flags_cls`` flags give (applied last): by default every flag given
        that names a config key. ``listing``: the command only lists presets or keys (nothing need be given)."""
        return {k: v for k, v in flags.model_dump().items() if v is not None and self.config_cls.knows(k)}

    def answer(self, flags: BaseModel) -> tuple[Any, list[str | Line]] | None:
        """A listing the flags ask for instead of a run (w2s --list-tasks): its --json object and its lines."""
        return None

    # ---- optional hooks -----------------------------------------------------
    def group_key(self, cfg: C) -> str | None:
        """Trials with the same key (not None) may train together through ``run_group``."""
        return None

    def run_group(self, cfgs: list[C], store: Store, *, sweep: str | None = None) -> list[StudyResult]:
        return [self.run(c, store, self.options(report=False)) for c in cfgs]

    def sweep_report(self, result: dict[str, Any], store: Store, swept: list[str]) -> bool:
        """Write this study's own sweep page, put its path (and any sweep-wide findings) into ``result`` and
        return True; False (the default) when the study has none, and the sweep layer writes its generic page
        (every trial in a table, each trial metric against each swept key; the protocol cannot import it)."""
        return False

    def write_run_report(self, run: Run, store: Store) -> Path:
        """(Re)write the report of one stored run of this study and return its path (`transferlab runs report`).

        ``report_from_run`` rebuilds it from the run's stored config and summary (and its folder); where it
        cannot (it returns None: a study whose page needs more than the run stored), the report.html the run
        wrote when it ran is the answer, and a one-line StoreError saying how to rerun it when there is none."""
        from transferlab.core.errors import StoreError

        cfg = self.stored_config(run)
        why = f"the {' '.join(self.cli_words())} study cannot rebuild its report from a stored run"
        try:
            path = self.report_from_run(cfg, run.summary() or {}, run, store)
        except (KeyError, TypeError, IndexError) as err:  # a summary older (or smaller) than the page it makes
            path, why = None, f"its summary lacks what the report needs ({type(err).__name__}: {err})"
        if path is not None:
            return Path(path)
        if run.report_path.is_file():
            return run.report_path
        raise StoreError(f"run {run.id} ({run.status}) has no report.html and {why}", where=str(run.path),
                         fix=f"rerun it: {self.rerun_hint(run)}")

    def report_from_run(self, cfg: C, summary: dict[str, Any], run: Run, store: Store) -> Path | None:
        """Rebuild the report of a stored run from its config and summary (``{}`` when it has none); None when
        this study cannot, or not for this run (then ``write_run_report`` gives the report the run wrote)."""
        return None

    def stored_config(self, run: Run) -> C:
        """A stored run's config.yaml as this study's config; a one-line StoreError when it no longer is one."""
        from transferlab.core.config import build
        from transferlab.core.errors import StoreError

        try:
            return build(self.config_cls, run.config())  # type: ignore[return-value]
        except StoreError:
            raise
        except Exception as err:  # a config.yaml that parses but is not a valid config any more
            raise StoreError(f"{run.path / 'config.yaml'} is not a valid {self.name} config ({err})",
                             fix=f"delete {run.path} to rerun it") from None

    # ---- derived from the declaration ----------------------------------------
    @classmethod
    def cli_words(cls) -> list[str]:
        """The words after `transferlab` that run this study."""
        return (cls.cli or cls.command).split()

    def rerun_hint(self, run: Run) -> str:
        return f"transferlab {' '.join(self.cli_words())} --config {run.path / 'config.yaml'}"

    def sweep_name_prefix(self) -> str:
        return self.sweep_prefix if self.sweep_prefix is not None else f"sweep-{self.command}-"


def scalars(data: Mapping[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Numbers (and None) of a summary, nested dicts flattened to dotted keys up to ``depth`` levels."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            out[key] = v
        elif isinstance(v, (int, float)):
            out[key] = None if isinstance(v, float) and not math.isfinite(v) else v
        elif isinstance(v, Mapping) and depth > 1 and k not in ("config", "settings"):
            out.update(scalars(v, f"{key}.", depth - 1))
    return out
