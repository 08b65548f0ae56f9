"""Config base: pydantic models, YAML files, ``key=value`` overrides, presets, hashing.

Every study config subclasses :class:`StudyConfig`. Unknown keys and bad values are refused
with a :class:`ConfigError` that names the field and says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from transferlab.core.errors import ConfigError

C = TypeVar("C", bound="StudyConfig")

# Fields that change how fast or where a run happens but not what it computes.
NON_IDENTITY_FIELDS = {"device", "num_threads", "progress"}


class StudyConfig(BaseModel):
    """Base of every study's config: frozen field set, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def config_hash(self) -> str:
        """Same config => same hash => same run (fields that only affect speed or place are left out, also
        inside nested sub-configs)."""
        ident = _identity(self.to_dict())
        blob = json.dumps({"study": type(self).__name__, **ident}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _identity(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _identity(v) if isinstance(v, dict) else v for k, v in d.items() if k not in NON_IDENTITY_FIELDS}


def _explain(err: ValidationError, cls: type[BaseModel]) -> ConfigError:
    first = err.errors()[0]
    field = ".".join(str(x) for x in first["loc"]) or "<config>"
    if first["type"] == "extra_forbidden":
        known = ", ".join(sorted(cls.model_fields))
        return ConfigError(
            f"unknown config key '{field}'", where=cls.__name__, fix=f"known keys are: {known}"
        )
    given = first.get("input")
    return ConfigError(
        f"bad value {given!r} for '{field}': {first['msg']}",
        where=cls.__name__,
        fix=f"set a valid value with --set {field}=...",
    )


def build(cls: type[C], values: dict[str, Any]) -> C:
    try:
        return cls(**values)
    except ValidationError as err:
        raise _explain(err, cls) from None


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` -> (key, YAML-parsed value): ``lr=1e-3`` gives a float, ``x+y`` stays a string."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' has no '='", fix="write it as key=value, e.g. lr=1e-3")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key", fix="write it as key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    return key, value


def set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    """``train.lr=1e-3`` sets ``values["train"]["lr"]``: a nested sub-config's field, on top of what the
    preset or file gave that sub-config."""
    *parents, leaf = key.split(".")
    node = values
    for part in parents:
        child = node.get(part)
        if hasattr(child, "model_dump"):
            child = child.model_dump()
        if not isinstance(child, dict):
            child = {}
        node[part] = child = dict(child)
        node = child
    node[leaf] = value


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}", fix="pass an existing YAML file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p} is not valid YAML ({err.__class__.__name__})", fix="fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of key: value", fix="write one key: value per line")
    return data


class PresetRegistry:
    """Named presets: each is a documented dict of overrides on the study's defaults."""

    def __init__(self) -> None:
        self._presets: dict[str, tuple[str, dict[str, Any]]] = {}

    def add(self, name: str, doc: str, **values: Any) -> None:
        self._presets[name] = (doc, values)

    def names(self) -> list[str]:
        return list(self._presets)

    def doc(self, name: str) -> str:
        return self._presets[name][0]

    def values(self, name: str) -> dict[str, Any]:
        if name not in self._presets:
            raise ConfigError(
                f"unknown preset '{name}'", fix=f"choose one of: {', '.join(self._presets)}"
            )
        return dict(self._presets[name][1])


def resolve(
    cls: type[C],
    *,
    presets: PresetRegistry | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    hook: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> C:
    """defaults <- preset <- YAML file <- ``--set`` overrides <- extra (CLI flags)."""
    values: dict[str, Any] = {}
    if preset is not None:
        if presets is None:
            raise ConfigError("this study has no presets", fix="drop --preset")
        values.update(presets.values(preset))
        values.setdefault("preset", preset) if "preset" in cls.model_fields else None
    if config_file is not None:
        values.update(load_yaml(config_file))
    for item in overrides or []:
        k, v = parse_override(item)
        set_dotted(values, k, v)
    values.update(extra or {})
    if hook is not None:
        values = hook(values)
    return build(cls, values)
