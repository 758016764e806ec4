"""Read a YAML config (a path, or the name of a built-in one), apply overrides, validate.

A config may name a parent with ``extends: other.yaml`` (relative to itself); the child's keys
are merged over the parent's, section by section. Overrides from the command line use dotted
keys (``classifier.max_epochs=5``) whose values are parsed as YAML scalars or lists.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ausynth.configs.schema import ExperimentConfig
from ausynth.tasks.errors import ConfigError


def builtin_config_dir() -> Path:
    return Path(str(resources.files("ausynth.configs")))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given, else a built-in config by name (``toy-quick`` or ``toy-quick.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    builtin = builtin_config_dir() / stem
    if len(path.parts) == 1 and builtin.is_file():
        return builtin
    known = ", ".join(sorted(p.stem for p in builtin_config_dir().glob("*.yaml")))
    raise ConfigError(f"config file {str(path)!r} does not exist (built-in configs: {known})")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_with_parents(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' forms a cycle")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    parent_path = (path.parent / parent).resolve()
    if not parent_path.is_file():
        raise ConfigError(f"{path}: extends {parent!r}, which does not exist at {parent_path}")
    return _merge(_load_with_parents(parent_path, (*seen, path.resolve())), data)


def apply_override(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one ``dotted.key=value`` override to a raw config mapping."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {assignment!r} is not of the form key=value (e.g. classifier.max_epochs=5)")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML: {err}") from err
    nested: Any = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return _merge(data, nested)


def _describe(err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        loc = [str(p) for p in problem["loc"]]
        if loc[:1] == ["dataset"] and loc[1:2] in (["toy"], ["faces"]):  # drop pydantic's union tag
            loc.pop(1)
        where = ".".join(loc) or "(top level)"
        got = f" (got {problem['input']!r})" if problem["type"] != "missing" else ""
        lines.append(f"  {where}: {problem['msg']}{got}")
    return "\n".join(lines)


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load, merge parents and overrides, and validate; raise ConfigError naming every bad key."""
    path = resolve_config_path(name_or_path)
    data = _load_with_parents(path)
    for assignment in overrides:
        data = apply_override(data, assignment)
    data.setdefault("name", path.stem)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid config\n{_describe(err)}") from err


def parameter_overrides(**settings: Any) -> list[str]:
    """Turn a flow's optional form fields (``None`` = keep the config's value) into overrides.

    Keys are dotted config paths with ``__`` for the dot, e.g. ``dataset__difficulty``.
    """
    return [f"{key.replace('__', '.')}={_inline_yaml(value)}" for key, value in settings.items() if value is not None]


def _inline_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()
