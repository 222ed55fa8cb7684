"""User-fixable failures: every error a user can act on is a CircuitbenchError subclass."""

from __future__ import annotations


class CircuitbenchError(Exception):
    """A failure the user can fix. The CLI prints its message and exits 1, without a traceback."""


class ConfigError(CircuitbenchError):
    """A model configuration file is malformed (unknown key, wrong type, inconsistent values)."""


class CheckpointError(CircuitbenchError):
    """A weight file is missing, unreadable, or does not match the configuration."""


class TokenizerError(CircuitbenchError):
    """No usable tokenizer, or text that the tokenizer cannot handle as asked."""


class ModelNotFoundError(CircuitbenchError):
    """A model name, path or Hub id that cannot be resolved to a model directory."""


class SpecError(CircuitbenchError):
    """A task spec file is malformed."""


class TaskError(CircuitbenchError):
    """A task name that does not exist, or a task that cannot be built as asked."""


class UnsupportedRequestError(CircuitbenchError):
    """A request a model wrapper does not serve (e.g. text generation from the lm-eval model)."""
