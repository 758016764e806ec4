"""The types of the flows' form fields, so the Prefect UI's run form offers choices, not free text.

A field typed ``X | None`` shows up in the form as a type switch stuck on 'None'; so the fields
that may keep the config's value take a plain type and a neutral default instead (``0``, ``[]``,
``"as configured"``), which ``configs.loader.parameter_overrides`` reads as 'keep'. The
descriptions come from each flow's docstring (its ``Args:`` section).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import WithJsonSchema

from ausynth.configs.loader import AS_CONFIGURED, builtin_config_names
from ausynth.tasks.strategies import STRATEGIES

BUILTIN = tuple(builtin_config_names())
# Two titled alternatives: the form shows a 'built-in | YAML file' switch, a choice list first.
ConfigName = (Annotated[Literal[BUILTIN], WithJsonSchema({"type": "string", "enum": list(BUILTIN), "title": "built-in"})]
              | Annotated[str, WithJsonSchema({"type": "string", "title": "YAML file"})])
StrategyName = Literal[tuple(STRATEGIES)]  # the choice list follows the registry
Difficulty = Literal[AS_CONFIGURED, "clean", "medium", "hard"]
Device = Literal[AS_CONFIGURED, "auto", "cpu", "cuda"]

