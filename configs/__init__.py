"""Experiment configs: the YAML files beside this module and the schema that validates them."""
