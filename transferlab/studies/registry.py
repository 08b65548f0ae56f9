"""The study registry (the lm-evaluation-harness lesson): every study by its CLI name, imported lazily,
with a typo suggestion for an unknown name. Adding a study is one line here (or ``register(cls)`` at run time:
a plugin, a test); its command, `transferlab sweep <command>` and `runs report` follow from the class."""

from __future__ import annotations

import difflib
import importlib

from transferlab.core.errors import ConfigError
from transferlab.studies.base import Study

# CLI name -> "module:class". Everything else about a study (its stored name, its other spellings, presets, ...)
# is declared on its class and read from there.
STUDIES: dict[str, str] = {
    "grok": "transferlab.studies.grokking.study:GrokStudy",
    "w2s": "transferlab.studies.w2s.study:W2SStudy",
    "transfer": "transferlab.studies.transfer.study:TransferStudy",
    "eft-demo": "transferlab.studies.eft.study:EFTDemoStudy",
    "correlate": "transferlab.studies.correlate.study:CorrelateStudy",
    "correlate-zoo": "transferlab.studies.correlate.study:CorrelateZooStudy",
}

_LOADED: dict[str, Study] = {}
_REGISTERED: dict[str, type[Study]] = {}  # classes given to register() (not importable by name, e.g. in a test)


def register(cls: type[Study]) -> None:
    """Add a study at run time under its ``command`` (the CLI adds its commands on its next call)."""
    if not (isinstance(cls, type) and issubclass(cls, Study)):
        raise TypeError(f"{cls!r} is not a Study subclass")
    key = cls.command
    if key in STUDIES and _class(key) is not cls:
        raise ConfigError(f"a study named '{key}' is already registered", fix="give the new study another command")
    STUDIES[key] = f"{cls.__module__}:{cls.__qualname__}"
    _REGISTERED[key] = cls
    _LOADED.pop(key, None)


def unregister(command: str) -> None:
    """Remove a study added by ``register`` (the studies declared above stay)."""
    if command in _REGISTERED:
        del _REGISTERED[command], STUDIES[command]
        _LOADED.pop(command, None)


def study_names() -> list[str]:
    return list(STUDIES)


def _class(key: str) -> type[Study]:
    if key in _REGISTERED:
        return _REGISTERED[key]
    module, cls = STUDIES[key].split(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def aliases() -> dict[str, str]:
    """Every other spelling of a study -> its CLI name: each class's stored ``name`` and ``aliases``."""
    out: dict[str, str] = {}
    for key in STUDIES:
        cls = _class(key)
        for other in (cls.name, *cls.aliases):
            if other != key:
                out[other] = key
    return out


def canonical(name: str) -> str:
    """The CLI name of a study given its CLI name, stored name or alias; ConfigError with a suggestion."""
    if name in STUDIES:
        return name
    other = aliases()
    if name in other:
        return other[name]
    close = difflib.get_close_matches(name, [*STUDIES, *other], n=1)
    hint = f"did you mean '{other.get(close[0], close[0])}'? " if close else ""
    raise ConfigError(f"unknown study '{name}'", where="STUDY",
                      fix=f"{hint}choose one of: {', '.join(STUDIES)}")


def get_study(name: str) -> Study:
    key = canonical(name)
    if key not in _LOADED:
        _LOADED[key] = _class(key)()
    return _LOADED[key]


def stored_name(name: str) -> str:
    """The store's folder of a study given any of its names (``grok`` -> ``grokking``)."""
    return get_study(name).name


def study_for(cfg: object) -> Study:
    """The study whose config class ``cfg`` is an instance of."""
    for key in STUDIES:
        study = get_study(key)
        if type(cfg) is study.config_cls:
            return study
    raise ConfigError(f"{type(cfg).__name__} is the config of no registered study",
                      fix=f"pass study= one of: {', '.join(STUDIES)}")
