"""The flows' run forms: what the Prefect UI builds from their parameter schemas."""

from __future__ import annotations

import pytest
from prefect.utilities.callables import parameter_schema

from ausynth.configs.loader import builtin_config_names, load_for_run, parameter_overrides
from ausynth.flows.compare import compare_strategies
from ausynth.flows.prepare_dataset import prepare_dataset_flow
from ausynth.flows.train_generator import train_generator_flow

FLOWS = (compare_strategies, prepare_dataset_flow, train_generator_flow)


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_field_has_a_description_and_none_is_stuck_on_null(flow):
    properties = parameter_schema(flow.fn).model_dump()["properties"]
    for name, field in properties.items():
        assert field.get("description"), f"{flow.name}: {name} has no description"
        assert "'null'" not in str(field), f"{flow.name}: {name} shows as 'Property is type None' in the form"


def test_config_offers_the_built_in_configs_or_a_yaml_file():
    config = parameter_schema(compare_strategies.fn).model_dump()["properties"]["config"]
    builtin, yaml_file = config["anyOf"]
    assert (builtin["title"], builtin["enum"]) == ("built-in", builtin_config_names())
    assert yaml_file == {"type": "string", "title": "YAML file"}
    assert "toy-quick" in builtin["enum"] and config["default"] == "toy-quick"


def test_the_strategy_field_is_a_choice_list_of_the_registry():
    from ausynth.tasks.strategies import STRATEGIES

    strategies = parameter_schema(compare_strategies.fn).model_dump()["properties"]["strategies"]
    assert strategies["items"]["enum"] == list(STRATEGIES) and strategies["default"] == []


def test_fields_at_their_defaults_keep_the_configs_values_and_filled_ones_override():
    assert parameter_overrides(strategies=[], seeds=[], dataset__difficulty="as configured", dataset__labelled=0,
                               device="as configured") == []
    form = parameter_overrides(strategies=["supervised"], seeds=[3, 4], dataset__difficulty="hard",
                               dataset__labelled=120, device="cpu")
    assert form == ["strategies=[supervised]", "seeds=[3, 4]", "dataset.difficulty=hard", "dataset.labelled=120",
                    "device=cpu"]
    cfg = load_for_run("toy-quick", form)
    assert (cfg.strategies, cfg.seeds, cfg.dataset.difficulty, cfg.dataset.labelled, cfg.device) == (
        ["supervised"], [3, 4], "hard", 120, "cpu")



def test_a_run_is_named_for_what_it_runs():
    from ausynth.flows.compare import run_name

    cfg = load_for_run("toy-quick", ["strategies=[supervised, generator]", "seeds=[0, 1]"])
    assert run_name(cfg) == "toy-quick: supervised, generator x seeds 0, 1"
