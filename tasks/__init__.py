"""ausynth.tasks."""
