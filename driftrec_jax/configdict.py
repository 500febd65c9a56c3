"""A small stand-in for ``ml_collections.ConfigDict``, used when ml_collections is not installed.

`config_lib` builds configs with ml_collections when it can. A bare accelerator host (jax, flax,
optax, orbax-checkpoint, numpy, Pillow, nothing else) has no ml_collections, and the configs in
``configs/`` must still load there, so this class offers what the project's configs and training
loop use: attribute and item access, nested dicts turned into ConfigDicts on assignment, ``in``,
``keys``/``items``/``get``, ``dict(cfg)``, ``to_dict()`` and ``to_json_best_effort()``. Unlike
ml_collections it checks no types and has no locking or field references.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ConfigDict:
    """A nested, attribute-accessible dict of config fields (see the module docstring)."""

    def __init__(self, initial: Mapping | None = None):
        object.__setattr__(self, "_fields", {})
        for key, value in (initial or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, Mapping) and not isinstance(value, ConfigDict):
            value = ConfigDict(value)
        self._fields[key] = value

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __getattr__(self, key: str) -> Any:
        try:
            return self._fields[key]
        except KeyError:
            raise AttributeError(f"config has no field {key!r}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._fields

    def __iter__(self):
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigDict) and self.to_dict() == other.to_dict()

    def keys(self):
        return self._fields.keys()

    def values(self):
        return self._fields.values()

    def items(self):
        return self._fields.items()

    def get(self, key: str, default: Any = None) -> Any:
        return self._fields.get(key, default)

    def to_dict(self) -> dict:
        return {k: v.to_dict() if isinstance(v, ConfigDict) else v for k, v in self._fields.items()}

    def to_json_best_effort(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), default=repr, **kwargs)

    def __repr__(self) -> str:
        return f"ConfigDict({self.to_dict()!r})"
