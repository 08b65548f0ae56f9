"""Config base: pydantic models, YAML files, ``key=value`` overrides, presets, hashing.

Every study config subclasses :class:`StudyConfig`. Unknown keys and bad values are refused
with a :class:`ConfigError` that names the field and says how to fix it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo

from transferlab.core.errors import ConfigError

C = TypeVar("C", bound="StudyConfig")

# Fields that change how fast or where a run happens but not what it computes (and preset: a label of where
# the values came from, so the same values reached by hand are the same run).
NON_IDENTITY_FIELDS = {"device", "num_threads", "progress", "compile", "preset", "workers"}


class ConfigPart(BaseModel):
    """One part of a study's config (its task, its model, its optimizer, ...): a field of a ``StudyConfig`` whose
    type subclasses this. A part's fields are also keys of the whole config under their *flat name*: the field's
    own name, or the one it declares (``Field(60, json_schema_extra=flat_as("ft_steps"))``), the spelling
    the key had before the config nested. So ``lr``, ``optimizer.lr`` and (where one part has it) a part's
    own field name all set the same value, in ``--set``, ``--grid``, YAML, presets and keyword arguments; the
    flat names of all parts and top-level fields are distinct, and the run id is the hash of the flat view, so
    nesting a config keeps its runs' ids. A rule about one part's fields is a validator of that part."""

    # as StudyConfig's: unknown keys refused, every float finite
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Keys:
    """The keys of a config class, derived from its fields: each part's class, and every flat name's path."""

    parts: dict[str, type[ConfigPart]]
    paths: dict[str, tuple[str, ...]]  # flat name -> (field,) or (part, field)
    leaves: dict[str, list[tuple[str, str]]]  # a part field's own name -> every (part, field) that has it
    fields: dict[str, FieldInfo]  # flat name -> its field

    def flat_name(self, path: tuple[str, ...]) -> str:
        for name, p in self.paths.items():
            if p == path:
                return name
        return ".".join(path)


def flat_as(name: str) -> dict[str, Any]:
    """A part field's flat name when it is not the field's own: ``Field(60, json_schema_extra=flat_as("ft_steps"))``."""
    return {"flat": name}


def _part_class(annotation: Any) -> type[ConfigPart] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, ConfigPart) else None


def _declared_flat_name(name: str, field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return str(extra.get("flat", name))


@functools.cache
def config_keys(cls: type[BaseModel]) -> Keys:
    parts: dict[str, type[ConfigPart]] = {}
    paths: dict[str, tuple[str, ...]] = {}
    leaves: dict[str, list[tuple[str, str]]] = {}
    fields: dict[str, FieldInfo] = {}

    def add(name: str, path: tuple[str, ...], f: FieldInfo) -> None:
        if name in paths:
            raise TypeError(f"{cls.__name__}: the flat key '{name}' is both {'.'.join(paths[name])} and "
                            f"{'.'.join(path)}; declare another with json_schema_extra=flat_as(...)")
        paths[name], fields[name] = path, f

    for name, f in cls.model_fields.items():
        part = _part_class(f.annotation)
        if part is None:
            add(name, (name,), f)
            continue
        parts[name] = part
        for leaf, pf in part.model_fields.items():
            add(_declared_flat_name(leaf, pf), (name, leaf), pf)
            leaves.setdefault(leaf, []).append((name, leaf))
    return Keys(parts, paths, leaves, fields)


def key_path(cls: type[BaseModel], key: str) -> tuple[str, ...]:
    """Where a key people type lands: ``optimizer.lr`` as written; a flat name (``lr``, ``ft_steps``) at its
    part's field; a part's own field name where one part has it (``weak.model``'s ``model`` is ambiguous in
    w2s: refused with one line naming the keys to write); anything else as written (validation then names it)."""
    if "." in key:
        return tuple(key.split("."))
    keys = config_keys(cls)
    if key in keys.paths:
        return keys.paths[key]
    if key in keys.parts:
        return (key,)
    found = keys.leaves.get(key, [])
    if len(found) > 1:
        names = [".".join(p) for p in found]
        raise ConfigError(f"'{key}' is ambiguous: it is {' and '.join(names)}", where=cls.__name__,
                          fix=f"write {' or '.join(f'{n}=...' for n in names)}")
    return found[0] if found else (key,)


def canonical_key(cls: type[BaseModel], key: str) -> str:
    """The one spelling of a key (sweep rows, sweep names, clash checks): its flat name; a key of another
    nested sub-config (``pretrain.lr``) as written."""
    return config_keys(cls).flat_name(key_path(cls, key))


def _as_dict(v: Any) -> dict[str, Any]:
    return v.model_dump() if isinstance(v, BaseModel) else dict(v)


def nest(cls: type[BaseModel], values: Mapping[str, Any], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """``values`` (flat, dotted or nested keys, in order) put where they belong in the nested dict ``into``: a
    part's mapping is merged field by field into what the part already has, any other key replaces."""
    out = dict(into or {})
    keys = config_keys(cls)
    for key, v in values.items():
        if key in keys.parts and isinstance(v, ConfigPart) and key not in out:
            out[key] = v  # a part given whole is kept as it is (a subclass too)
            continue
        if key in keys.parts and isinstance(v, (Mapping, ConfigPart)):
            part = _as_dict(out.get(key) or {})
            part.update(_as_dict(v))
            out[key] = part
            continue
        path = key_path(cls, key)
        if len(path) == 2 and path[0] in keys.parts:
            part = _as_dict(out.get(path[0]) or {})
            part[path[1]] = v
            out[path[0]] = part
        elif len(path) > 1:
            set_dotted(out, ".".join(path), v)
        else:
            out[path[0]] = v
    return out


class StudyConfig(BaseModel):
    """Base of every study's config: frozen field set, validated on assignment. A config with parts (fields
    whose type is a :class:`ConfigPart`) takes every key by its flat name too, and is hashed on its flat view."""

    # allow_inf_nan=False: every float field (also inside lists and dicts) must be finite, so lr=inf or
    # --fix-beta nan is refused at the boundary with the field's name instead of failing deep inside a run.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_keys(cls, data: Any) -> Any:
        """Flat and dotted keys (``lr=...``, ``optimizer.lr=...``; a stored config.yaml of before the nesting)
        go to their part."""
        if isinstance(data, Mapping) and config_keys(cls).parts:
            return nest(cls, data)
        return data

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self, without: tuple[str, ...] = ()) -> dict[str, Any]:
        """The config as one level of keys (each part's fields under their flat names), without the parts named
        in ``without``: the run id's input, and the view that sweep rows and reports read by the keys people
        type. A cache keyed on some parts hashes this view of them (w2s: the floor and ceiling)."""
        d = self.to_dict()
        return {name: (d[path[0]][path[1]] if len(path) == 2 else d[path[0]])
                for name, path in config_keys(type(self)).paths.items() if path[0] not in without}

    def value(self, key: str) -> Any:
        """The value of any spelling of a key (flat, dotted, a part's field name); None where it is absent."""
        node: Any = self
        for part in key_path(type(self), key):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        return node

    @classmethod
    def knows(cls, key: str) -> bool:
        """Whether ``key`` names a value of this config (any spelling)."""
        try:
            path = key_path(cls, key)
        except ConfigError:
            return True  # ambiguous: a key, but the user must say which
        model: Any = cls
        for part in path:
            fields = getattr(model, "model_fields", None)
            if not fields or part not in fields:
                return False
            model = fields[part].annotation
        return True

    def updated(self: C, **values: Any) -> C:
        """A validated copy with ``values`` (any spelling of the keys) on top."""
        return type(self)(**nest(type(self), values, into=self.model_dump()))

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any:
        """pydantic's copy; an ``update`` that names a part's field (``lr``) is applied as ``updated`` does."""
        keys = config_keys(type(self))
        if update and keys.parts and any(k not in type(self).model_fields or k in keys.parts for k in update):
            return self.updated(**update)
        return super().model_copy(update=update, deep=deep)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # Fields added after runs were stored: left out of the hash while they keep their default, so the runs
    # already in a store keep their ids (and are reused) when a new field appears.
    HASH_WHEN_CHANGED: ClassVar[frozenset[str]] = frozenset()

    def input_files(self) -> list[str]:
        """The files and folders a run of this config reads (a user's data, a local model): their content enters
        the config hash, so the same path holding other content is another run. Default: none."""
        return []

    def inputs(self) -> dict[str, str]:
        """``input_files`` with their content fingerprints (``core.fingerprint``)."""
        from transferlab.core.fingerprint import fingerprint

        return {p: fingerprint(p) for p in self.input_files()}

    def at_default(self, key: str) -> bool:
        """Whether the key ``key`` (any spelling) holds its field's default (a ``default_factory``'s value
        included)."""
        field = config_keys(type(self)).fields[canonical_key(type(self), key)]
        return self.value(key) == field.get_default(call_default_factory=True)

    def config_hash(self) -> str:
        """Same config => same hash => same run (fields that only affect speed or place are left out, also
        inside nested sub-configs; fields in HASH_WHEN_CHANGED count only when they differ from their default;
        the content of every input file counts, see ``input_files``)."""
        ident = {k: v for k, v in _identity(self.flat()).items()
                 if not (k in self.HASH_WHEN_CHANGED and self.at_default(k))}
        inputs = self.inputs()
        if inputs:  # a key no field can have; configs without input files keep their earlier hashes
            ident["input files@content"] = inputs
        blob = json.dumps({"study": type(self).__name__, **ident}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _identity(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _identity(v) if isinstance(v, dict) else v for k, v in d.items() if k not in NON_IDENTITY_FIELDS}


def _explain(err: ValidationError, cls: type[BaseModel]) -> ConfigError:
    first = err.errors()[0]
    loc = tuple(str(x) for x in first["loc"])
    keys = config_keys(cls)
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        if len(loc) == 2 and loc[0] in keys.parts:
            known = ", ".join(f"{loc[0]}.{k}" for k in keys.parts[loc[0]].model_fields)
        else:
            known = ", ".join(sorted(keys.paths))
        return ConfigError(
            f"unknown config key '{'.'.join(loc)}'", where=cls.__name__, fix=f"known keys are: {known}"
        )
    if not loc or (len(loc) == 1 and loc[0] in keys.parts):
        # a check across fields (a model validator of the config or of one part): its message names the fields
        return ConfigError(msg, where=".".join((cls.__name__, *loc)),
                           fix="change the values it names with --set key=...")
    field = keys.flat_name(loc[:2]) + "".join(f".{x}" for x in loc[2:]) if loc[0] in keys.parts else ".".join(loc)
    given = repr(first.get("input"))
    if len(given) > 80:
        given = given[:77] + "..."
    return ConfigError(
        f"bad value {given} for '{field}': {msg}",
        where=cls.__name__,
        fix=f"set a valid value with --set {field.split('.')[0]}=...",
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


def describe(field: Any) -> str:
    """A config field's description for `--explain` and the command's help. A field whose choices live in a
    registry declares ``json_schema_extra={"choices": callable}``: the names are read when the text is shown,
    so a loss (say) added by defining its class is listed without another edit."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    text = field.description or ""
    choices = extra.get("choices")
    if callable(choices):
        text = f"{text} (one of: {', '.join(choices())})" if text else f"one of: {', '.join(choices())}"
    return text


def get_dotted(values: dict[str, Any], key: str) -> Any:
    """``values["train"]["lr"]`` for ``train.lr`` (None where a part is missing)."""
    node: Any = values
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


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


def _seed_sub_config(cls: type[BaseModel], values: dict[str, Any], key: str) -> None:
    """Before ``pretrain.num_threads=1`` sets one field of a sub-config that the preset and file left alone,
    start that sub-config from the study's *field default* (its ``default_factory``, e.g. the EFT demo's
    fine-tuning ``TrainSettings(seq_len=64, lr=1e-3, ...)``), not from the sub-config class's own defaults:
    otherwise one ``--set`` would silently reset every other field of it."""
    parts = key.split(".")
    node, model = values, cls
    for part in parts[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return
        if part not in node or node[part] is None:
            default = field.get_default(call_default_factory=True)
            if not hasattr(default, "model_dump"):
                return
            node[part] = default.model_dump()
        child = node[part]
        if hasattr(child, "model_dump"):
            node[part] = child = child.model_dump()
        if not isinstance(child, dict):
            return
        node, model = child, field.annotation
        if not isinstance(model, type):
            return


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"key '{key}' is given twice (lines {seen[key]} and {line})",
                                  fix="keep one of them")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_text_file(path: str | Path, what: str = "file") -> str:
    """A text file users give us, as UTF-8 (a byte-order mark is dropped), with one clear line when it is
    missing, a folder, unreadable or not text."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} not found: {p}", fix=f"pass an existing {what}")
    if p.is_dir():
        raise ConfigError(f"{p} is a folder, not a {what}", fix=f"pass the path of a {what}")
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {p} ({err.strerror})", fix="check the file's permissions") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p} is not UTF-8 text (byte {err.start} is 0x{raw[err.start]:02x})",
                          fix="save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    text = read_text_file(p, "config file")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except ConfigError as err:
        raise ConfigError(err.what, where=str(p), fix=err.fix) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p} is not valid YAML{at} ({err.__class__.__name__})", fix="fix the file") from None
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
        values = nest(cls, presets.values(preset))
        values.setdefault("preset", preset) if "preset" in cls.model_fields else None
    if config_file is not None:
        values = nest(cls, load_yaml(config_file), into=values)
    for item in overrides or []:
        k, v = parse_override(item)
        path = ".".join(key_path(cls, k))
        if path.split(".")[0] in config_keys(cls).parts:
            values = nest(cls, {k: v}, into=values)  # a part's field, or a whole part given as a mapping
        else:
            _seed_sub_config(cls, values, path)
            set_dotted(values, path, v)
    values = nest(cls, extra or {}, into=values)
    if hook is not None:
        values = hook(values)
    return build(cls, values)
