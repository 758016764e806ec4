"""ausynth.models."""
