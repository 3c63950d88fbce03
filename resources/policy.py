"""Resources that carry a core policy dataclass: same fields, no defaults of their own.

The default of every setting is written once, in the core dataclass (`fraudloop.core.settings.
setting`); the composition root reads the environment into that dataclass and builds the resource
from it, so the UI shows every value a run used, and `.policy()` hands the core the dataclass.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any, TypeVar

import dagster as dg

P = TypeVar("P")


class PolicyResource(dg.ConfigurableResource):
    """A resource whose fields mirror one core policy dataclass (see `policy_resource`)."""

    _policy_class: typing.ClassVar[type]

    @classmethod
    def of(cls, policy: Any) -> PolicyResource:
        return cls(**{k: v for k, v in dataclasses.asdict(policy).items() if k in cls.model_fields})

    def policy(self):
        return self._policy_class(**{name: getattr(self, name) for name in type(self).model_fields})


def _config_type(kind: Any) -> Any:
    """Dagster config has lists, not tuples."""
    if typing.get_origin(kind) is tuple:
        return list[typing.get_args(kind)[0]]
    return kind


def policy_resource(policy_class: type[P], name: str, doc: str) -> type[PolicyResource]:
    """A `PolicyResource` class named `name` with the fields of `policy_class` (secret fields
    excepted: those reach resources through `dg.EnvVar`, never as plain values)."""
    hints = typing.get_type_hints(policy_class)
    annotations = {
        f.name: _config_type(hints[f.name])
        for f in dataclasses.fields(policy_class)
        if f.init and not f.metadata.get("secret")
    }
    caller = sys._getframe(1).f_globals["__name__"]
    namespace = {
        "__annotations__": annotations,
        "__doc__": doc,
        "__module__": caller,
        "__qualname__": name,
        "_policy_class": policy_class,
    }
    return typing.cast(type[PolicyResource], type(name, (PolicyResource,), namespace))
