"""Settings declared by the parts that read them, so that a plugin brings its own keys without touching the core
and a key no chosen part reads is an error, not a silent no-op (``-p squash=clip`` on a diffusion head).

    @dataclass
    class Settings(PolicyHead.Settings):
        width: int = setting(64, "hidden width", min=1)

A subclass extends its parent's ``Settings`` by subclassing it. The part's constructor takes the same
names as keyword arguments (the agent passes exactly the declared ones).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

_BOOLS = {**dict.fromkeys(("1", "true", "yes", "on"), True), **dict.fromkeys(("0", "false", "no", "off"), False)}


def bound_text(x: float) -> str:
    """A bound as users read it, in the refusal message and in `dqltoolkit list keys` alike (``16,777,216``, not ``1.67772e+07``)."""
    return f"{int(x):,}" if float(x).is_integer() and abs(x) >= 10_000 else f"{x:g}"


def setting(default: Any, help: str = "", *, min: Optional[float] = None, max: Optional[float] = None,
            choices: Optional[Sequence[Any]] = None) -> Any:
    """A declared setting: its default, a one-line help (``dqltoolkit list keys``) and bounds (``min``, ``max``, ``choices``)."""
    return field(default=default, metadata={"help": help, "min": min, "max": max, "choices": tuple(choices) if choices else None})


@dataclass(frozen=True)
class SettingSpec:
    """One key: its name, type, default, description, bounds and who declares it (``head 'diffusion'``)."""

    name: str
    type: type
    default: Any
    help: str = ""
    min: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    owner: str = ""
    max: Optional[float] = None


def _base_type(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    union = (typing.Union, getattr(__import__("types"), "UnionType", None))
    return args[0] if typing.get_origin(tp) in union and args else tp


def specs_of(settings_cls: Optional[type], owner: str = "") -> Dict[str, SettingSpec]:
    """The keys a ``Settings`` dataclass declares (none for ``None``)."""
    if settings_cls is None:
        return {}
    if not dataclasses.is_dataclass(settings_cls):
        raise TypeError(f"{owner or settings_cls!r}: Settings must be a dataclass, got {settings_cls!r}")
    hints = typing.get_type_hints(settings_cls)
    out = {}
    for f in dataclasses.fields(settings_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        meta = f.metadata or {}
        out[f.name] = SettingSpec(f.name, _base_type(hints[f.name]), default, meta.get("help", ""), meta.get("min"), meta.get("choices"),
                                  owner, meta.get("max"))
    return out


def part_settings(cls: type, owner: str = "") -> Dict[str, SettingSpec]:
    """The keys a part class declares through its (possibly inherited) ``Settings`` dataclass."""
    return specs_of(getattr(cls, "Settings", None), owner)


class SettingError(ValueError):
    """A value that does not fit its declared type or bounds."""


class ConfigError(ValueError):
    """A recipe, override or part setting that cannot be applied (here so that parts can raise it; config re-exports it)."""


def coerce(spec: SettingSpec, value: Any, source: str) -> Any:
    """``value`` as the spec's type, within its bounds; :class:`SettingError` naming ``source`` and the key."""
    tp, key = spec.type, spec.name
    try:
        if isinstance(value, bool) and tp in (int, float, str):
            raise ValueError
        if tp is bool:
            out: Any = value if isinstance(value, bool) else _BOOLS[str(value).strip().lower()]
        elif tp is int:
            f = float(value)
            if not f.is_integer():
                raise ValueError
            out = int(f)
        elif tp is float:
            out = float(value)
            if not math.isfinite(out):
                raise SettingError(f"{source}: {key}={value!r} is not a finite number")
        elif tp is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError
            out = str(value)
        else:
            out = value
    except SettingError:
        raise
    except (TypeError, ValueError, OverflowError, KeyError):
        raise SettingError(f"{source}: {key}={value!r} is not a valid {getattr(tp, '__name__', tp)}") from None
    number = isinstance(out, (int, float)) and not isinstance(out, bool)
    if number and spec.min is not None and out < spec.min:
        raise SettingError(f"{source}: {key}={out!r} is below its minimum {bound_text(spec.min)}")
    if number and spec.max is not None and out > spec.max:
        raise SettingError(f"{source}: {key}={out!r} is above its maximum {bound_text(spec.max)}" + (" (a stated limit: no published setting comes near it)" if spec.type is int else ""))
    if spec.choices is not None and out not in spec.choices:
        raise SettingError(f"{source}: {key}={out!r} is not one of {', '.join(map(repr, spec.choices))}")
    return out
