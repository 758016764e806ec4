"""Read a YAML config (a path, or the name of a built-in one), apply overrides, validate.

A config may name a parent with ``extends: other.yaml`` (relative to itself); the child's keys
are merged over the parent's, section by section. Overrides from the command line use dotted
keys (``classifier.max_epochs=5``) whose values are parsed as YAML scalars or lists.

Two levels of checks, both before any work:

- ``load_config`` checks the config alone (files, keys, values), so a config validates the same
  on every machine;
- ``check_runtime`` checks it against this machine (a CUDA device, memory for the training set,
  a writable workspace). The CLI calls it before starting Prefect; flows call it too, since a
  deployment run has no CLI in front of it. It is kept out of the pydantic model so that a GPU
  config can still be loaded (and its keys checked) on a laptop.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ausynth.configs.faces import FaceDatasetConfig
from ausynth.configs.schema import ExperimentConfig, ToyDatasetConfig
from ausynth.tasks.errors import ConfigError
from ausynth.tasks.outputs import check_workspace

MEMORY_SHARE = 0.5  # refuse a training set that needs more than this share of physical memory

# (where a mapping came from, the mapping), base first: the parents, the file, the overrides
Sources = list[tuple[str, dict[str, Any]]]


def builtin_config_dir() -> Path:
    return Path(str(resources.files("ausynth.configs")))


def builtin_config_names() -> list[str]:
    return sorted(p.stem for p in builtin_config_dir().glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given, else a built-in config by name (``toy-quick`` or ``toy-quick.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    builtin = builtin_config_dir() / stem
    if len(path.parts) == 1 and builtin.is_file():
        return builtin
    known = ", ".join(builtin_config_names())
    raise ConfigError(f"config file {str(path)!r} does not exist (built-in configs: {known})")


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    """One file's mapping; ``label`` names the file in messages (and the child that extends it).

    An empty file is an error rather than 'all defaults': it is far more often a truncated or
    wrongly saved file than a wish for the defaults.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{label}: not UTF-8 text (byte {err.start}: {err.reason}); save the file as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{label}: cannot be read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{label}: malformed YAML{_yaml_problem(err)}") from err
    if data is None:
        raise ConfigError(f"{label} is empty: a config needs at least one key (e.g. 'name: my-experiment')")
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's problem and position in one line (its own text points at '<unicode string>')."""
    mark = getattr(err, "problem_mark", None)
    if mark is None:
        return f": {err}"
    context = f" ({err.context})" if getattr(err, "context", None) else ""
    return f" at line {mark.line + 1}, column {mark.column + 1}: {err.problem}{context}"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _load_with_parents(path: Path, label: str, seen: tuple[Path, ...] = ()) -> Sources:
    """The file and its ``extends`` chain, base first, each labelled for messages."""
    if path.resolve() in seen:
        raise ConfigError(f"{label}: 'extends' forms a cycle")
    data = _read_yaml(path, label)
    parent = data.pop("extends", None)
    if parent is None:
        return [(label, data)]
    parent_path = (path.parent / str(parent)).resolve()
    if not parent_path.is_file():
        raise ConfigError(f"{label}: extends {parent!r}, which does not exist at {parent_path}")
    parent_label = f"{parent_path} (extended by {label})"
    return [*_load_with_parents(parent_path, parent_label, (*seen, path.resolve())), (label, data)]


def _override_mapping(assignment: str) -> dict[str, Any]:
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
    return nested


def apply_override(data: dict[str, Any], assignment: str) -> dict[str, Any]:
    """Apply one ``dotted.key=value`` override to a raw config mapping."""
    return _merge(data, _override_mapping(assignment))


def _origin(loc: list[str], sources: Sources) -> str | None:
    """The last source that sets the key at ``loc``, so that a bad key from a parent names the parent."""
    for label, data in reversed(sources):
        node: Any = data
        for part in loc:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                break
        else:
            return label if loc else None
    return None


# Keys that changed name, so an old config is told what they are now.
RENAMED = {"lambda_rec": "lambda_cycle (cycle reconstruction) and lambda_identity (EM: G(x, no change) = x)"}


def _describe(err: ValidationError, sources: Sources, file_label: str) -> str:
    lines = []
    for problem in err.errors():
        loc = [str(p) for p in problem["loc"]]
        if loc[:1] == ["dataset"] and loc[1:2] in (["toy"], ["faces"]):  # drop pydantic's union tag
            loc.pop(1)
        where = ".".join(loc) or "(top level)"
        shown = problem["type"] != "missing" and not isinstance(problem["input"], dict)  # not a whole section
        got = f" (got {problem['input']!r})" if shown else ""
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key" + (f": renamed to {RENAMED[loc[-1]]}" if loc[-1] in RENAMED else
                                       ": check its spelling and section (`ausynth validate --show` prints every key)")
        origin = _origin(loc, sources)
        source = f" [set in {origin}]" if origin not in (None, file_label) else ""
        lines.append(f"  {where}: {message}{got}{source}")
    return "\n".join(lines)


def load_config(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Load, merge parents and overrides, and validate; raise ConfigError naming the file and every bad key.

    Only the config itself is checked here; ``check_runtime`` checks it against this machine.
    """
    path = resolve_config_path(name_or_path)
    sources = _load_with_parents(path, str(path))
    sources += [(f"--set {assignment}", _override_mapping(assignment)) for assignment in overrides]
    data: dict[str, Any] = {}
    for _, mapping in sources:
        data = _merge(data, mapping)
    data.setdefault("name", path.stem)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid config\n{_describe(err, sources, str(path))}") from err


def load_for_run(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                 needs_labels: bool = True) -> ExperimentConfig:
    """``load_config`` plus the checks against this machine: what every flow calls before any work,
    so a deployment run (which does not pass through the CLI) fails as early as ``ausynth run``.
    Only preparing a dataset (``needs_labels=False``) takes an unlabelled pool alone."""
    cfg = load_config(name_or_path, overrides)
    if needs_labels:
        check_labelled(cfg)
    check_runtime(cfg)
    return cfg


def check_labelled(cfg: ExperimentConfig) -> None:
    """A face dataset that is an unlabelled pool alone can be prepared, but nothing can be learnt from it."""
    if isinstance(cfg.dataset, FaceDatasetConfig) and cfg.dataset.source is None:
        raise ConfigError(f"{cfg.name}: the dataset is an unlabelled pool alone (no dataset.source). "
                          "`ausynth prepare` detects and crops it; comparing strategies or training a generator "
                          "needs labelled images too: add a labelled 'source:' under dataset")


def check_runtime(cfg: ExperimentConfig) -> None:
    """Check a valid config against this machine, before any work; raise a UserError naming the key.

    ``device: cuda`` without a visible GPU and a training set too large for memory are
    ConfigErrors (change the key); a workspace that is a file or read-only is a SetupError.
    """
    import torch  # here, not at import: loading a config needs no torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{cfg.name}: device is 'cuda' but no CUDA GPU is visible on this machine; "
                          "use device: auto (CUDA when present, else the CPU) or device: cpu")
    _check_memory(cfg)
    check_workspace(cfg.workspace)


def _check_memory(cfg: ExperimentConfig) -> None:
    """Refuse a largest training set (labelled + augment.size images, uint8) above half the physical memory.

    Every stage holds its training images in one tensor, so a too large ``augment.size`` would
    otherwise fail (or swap) only after the dataset and the baseline were built. For faces the
    labelled count is known only after ingestion: ``dataset.limit`` counts when set, else only
    the added images do. Float copies are made per batch and are negligible.
    """
    if isinstance(cfg.dataset, ToyDatasetConfig):
        labelled, labelled_key, (side, channels) = cfg.dataset.labelled, "dataset.labelled", (96, 1)
    else:
        detection = cfg.dataset.detection
        labelled, labelled_key, (side, channels) = cfg.dataset.limit or 0, "dataset.limit", (detection.size,
                                                                                              detection.channels)
    added = cfg.augment.size if set(cfg.strategies) - {"supervised"} else 0  # the baseline adds nothing
    need = (labelled + added) * side * side * channels
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > MEMORY_SHARE * memory:
        key, value = ("augment.size", added) if added else (labelled_key, labelled)
        raise ConfigError(
            f"{cfg.name}: {key} ({value}) is too large for this machine: the largest training set "
            f"({labelled} labelled + {added} added images of {side}x{side}x{channels} uint8) needs about "
            f"{need / 2**30:.1f} GiB in memory, more than half of its {memory / 2**30:.1f} GiB; lower {key}"
        )


AS_CONFIGURED = "as configured"  # a form choice: keep the config's value
KEEP = (None, 0, [], AS_CONFIGURED)  # a form field left at one of these keeps the config's value


def parameter_overrides(**settings: Any) -> list[str]:
    """Turn a flow's form fields into overrides; a field at a ``KEEP`` value keeps the config's.

    Keys are dotted config paths with ``__`` for the dot, e.g. ``dataset__difficulty``.
    """
    return [f"{key.replace('__', '.')}={_inline_yaml(value)}" for key, value in settings.items()
            if not any(value == keep and type(value) is type(keep) for keep in KEEP)]


def _inline_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("...\n").strip()
