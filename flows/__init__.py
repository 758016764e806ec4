"""ausynth.flows."""
