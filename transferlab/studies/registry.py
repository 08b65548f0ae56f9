"""The study registry (the lm-evaluation-harness lesson): every study by its CLI name, imported lazily,
with a typo suggestion for an unknown name. Adding a study is one line here."""

from __future__ import annotations

import difflib
import importlib

from transferlab.core.errors import ConfigError
from transferlab.studies.base import Study

# CLI name -> "module:class". The stored name (the store's folder) is each class's ``name``.
STUDIES: dict[str, str] = {
    "grok": "transferlab.studies.grokking.study:GrokStudy",
    "w2s": "transferlab.studies.w2s.study:W2SStudy",
    "transfer": "transferlab.studies.transfer.study:TransferStudy",
    "eft-demo": "transferlab.studies.eft.study:EFTDemoStudy",
    "correlate": "transferlab.studies.correlate.study:CorrelateStudy",
    "correlate-zoo": "transferlab.studies.correlate.study:CorrelateZooStudy",
}
# stored names and spellings people type for the same study
ALIASES = {"grokking": "grok", "eft_demo": "eft-demo", "eft": "eft-demo", "correlate_zoo": "correlate-zoo"}

_LOADED: dict[str, Study] = {}


def study_names() -> list[str]:
    return list(STUDIES)


def canonical(name: str) -> str:
    """The CLI name of a study given its CLI name, stored name or alias; ConfigError with a suggestion."""
    key = ALIASES.get(name, name)
    if key in STUDIES:
        return key
    close = difflib.get_close_matches(name, [*STUDIES, *ALIASES], n=1)
    hint = f"did you mean '{ALIASES.get(close[0], close[0])}'? " if close else ""
    raise ConfigError(f"unknown study '{name}'", where="STUDY",
                      fix=f"{hint}choose one of: {', '.join(STUDIES)}")


def get_study(name: str) -> Study:
    key = canonical(name)
    if key not in _LOADED:
        module, cls = STUDIES[key].split(":")
        _LOADED[key] = getattr(importlib.import_module(module), cls)()
    return _LOADED[key]


def study_for(cfg: object) -> Study:
    """The study whose config class ``cfg`` is an instance of."""
    for key in STUDIES:
        study = get_study(key)
        if type(cfg) is study.config_cls:
            return study
    raise ConfigError(f"{type(cfg).__name__} is the config of no registered study",
                      fix=f"pass study= one of: {', '.join(STUDIES)}")
