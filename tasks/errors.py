"""The errors a user can fix, as opposed to bugs.

Every error raised because of what a user gave (a config, data files, a checkpoint, the machine
and its servers) derives from ``UserError``. The ``ausynth`` command prints such an error as one
paragraph and exits non-zero; anything else is a bug and keeps its traceback. Each message names
the file, key or row at fault and says what to do.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment; its message is all the user needs."""

    exit_code = 1


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the file and key."""

    exit_code = 2


class DataError(UserError, ValueError):
    """Input data that cannot be used: a manifest, an image folder, labels; names the file, column or rows."""


class CheckpointError(UserError, ValueError):
    """A generator checkpoint that is missing, damaged, or made for other networks or data."""


class StoreError(UserError):
    """A damaged entry of the workspace's store, or a workspace that cannot be written."""


class SetupError(UserError):
    """The machine or a server cannot do what was asked (no GPU, MLflow down, workspace not writable)."""

    exit_code = 3
