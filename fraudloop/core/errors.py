"""One error hierarchy for the whole core, so callers (the CLI, assets, the service) can tell a
bad input from a broken store from a refused model without knowing every module.

Every stage raises a subclass of its stage's base below; each base carries the exit code the CLI
returns for it, and its message is one line a human can act on. Subclasses keep the builtin base
they always had (``KeyError``, ``ValueError``, ...) so existing ``except`` clauses still hold.
"""

from __future__ import annotations


class FraudloopError(Exception):
    """Base of every error fraudloop raises on purpose."""

    exit_code = 1


class ConfigError(FraudloopError, ValueError):
    """A setting or an argument is invalid (names the variable or option to fix)."""

    exit_code = 2


class StoreError(FraudloopError):
    """The object store failed, refused a conditional write, or holds bytes that do not verify."""

    exit_code = 3


class FeedError(FraudloopError, ValueError):
    """A feed specification (simulated drift, corruption, an import mapping) is unusable."""

    exit_code = 4


class DataError(FraudloopError):
    """A partition is missing, quarantined, or cannot be used by the stage that asked for it."""

    exit_code = 5


class FeatureError(FraudloopError):
    """Features cannot be computed or served from what is stored (e.g. a stale checkpoint)."""

    exit_code = 6


class ModelError(FraudloopError):
    """Training, evaluation or the registry refused the request (unknown version, no data,
    a conflicting alias update)."""

    exit_code = 7


class DeliveryError(FraudloopError):
    """A package, a staging test or a rollout refused the request (unverified, unstaged, an
    inconsistent rollout policy)."""

    exit_code = 8


class MonitoringError(FraudloopError):
    """Monitoring cannot judge what it was asked to (no reference, no predictions)."""

    exit_code = 9
