"""A W&B sweep parameter (``distribution: ...``) rewritten in hpopipe's search-space form (``type: ...``).

Every distribution W&B's sweep-config schema has is accepted, with the meaning W&B's own sampler
gives it (``sweeps/params.py``: the ``*_values`` forms take values, the others natural-log
exponents; ``q`` rounds a draw to ``round(x / q) * q``, an integer when ``q`` is written as one).
Where Optuna samples the same values the mapping is exact; where it has no such prior (normal,
log-normal, beta; a log range with a step) the spec is the nearest one it has, and
:func:`convert` says how it differs. docs/strategies.md has the table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# The keys each distribution takes (besides `distribution` and hpopipe's own `when`), as in W&B's schema.
_KEYS: dict[str, frozenset[str]] = {
    name: frozenset(keys.split())
    for name, keys in {
        "constant": "value",
        "categorical": "values",
        "categorical_w_probabilities": "values probabilities",
        "int_uniform": "min max",
        "uniform": "min max",
        "q_uniform": "min max q",
        "log_uniform": "min max",
        "log_uniform_values": "min max",
        "q_log_uniform": "min max q",
        "q_log_uniform_values": "min max q",
        "inv_log_uniform": "min max",
        "inv_log_uniform_values": "min max",
        "normal": "mu sigma",
        "q_normal": "mu sigma q",
        "log_normal": "mu sigma",
        "q_log_normal": "mu sigma q",
        "beta": "a b",
        "q_beta": "a b q",
    }.items()
}
DISTRIBUTIONS = tuple(_KEYS)
# W&B's defaults (its schema): q is the float 1.0, so a `q` left out gives floats, not integers.
_DEFAULTS: dict[str, Any] = {"q": 1.0, "mu": 0.0, "sigma": 1.0, "a": 1.0, "b": 1.0}
_REQUIRED = frozenset({"value", "values", "probabilities", "min", "max"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Mapped:
    """An hpopipe spec, and how its prior differs from W&B's (None: the same values, equally likely)."""

    spec: dict[str, Any]
    note: str | None = None


def from_wandb(spec: dict[str, Any]) -> dict[str, Any]:
    """Normalise a W&B sweep parameter (``distribution: ...``) into hpopipe's form.

    Raises:
        ValueError: an unknown distribution or key, a missing or non-numeric bound.
    """
    return convert(spec).spec


def convert(spec: dict[str, Any]) -> Mapped:
    """:func:`from_wandb`, with the note that names any approximation."""
    body = {key: value for key, value in spec.items() if key != "when"}
    dist = _distribution(body)
    unknown = set(body) - _KEYS[dist] - {"distribution"}
    if unknown:
        keys = ", ".join(sorted(_KEYS[dist]))
        raise ValueError(f"{dist} takes {keys}, not {', '.join(sorted(unknown))}")
    args = {key: body.get(key, _DEFAULTS.get(key)) for key in _KEYS[dist]}
    missing = sorted(key for key, value in args.items() if value is None and key in _REQUIRED)
    if missing:
        raise ValueError(f"{dist} needs {' and '.join(missing)}")
    mapped = _MAPPERS[dist](**args) if dist in _MAPPERS else _numeric(dist, args)
    if "when" in spec:
        mapped = Mapped({**mapped.spec, "when": spec["when"]}, mapped.note)
    return mapped


def check_name(name: Any) -> None:
    """A search-space name: a Python identifier, or several joined by dots (``model.encoder.depth``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"parameter name {name!r} must be a Python identifier, or identifiers joined by dots"
        )


def flatten(parameters: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """W&B's nested ``{name: {parameters: {...}}}`` blocks as dotted names, in the order written.

    Raises:
        ValueError: a name that is not an identifier, a block with other keys beside
            ``parameters``, or a name given twice (nested and dotted).
    """
    out: dict[str, Any] = {}
    for name, spec in parameters.items():
        check_name(name)
        full = f"{prefix}{name}"
        if isinstance(spec, dict) and "parameters" in spec and "type" not in spec:
            if (
                set(spec) != {"parameters"}
                or not isinstance(spec["parameters"], dict)
                or not spec["parameters"]
            ):
                raise ValueError(f"{full}: a nested block holds one non-empty mapping, parameters:")
            inner = flatten(spec["parameters"], f"{full}.")
        else:
            inner = {full: spec}
        for key, value in inner.items():
            if key in out:
                raise ValueError(f"{key}: given twice (as a nested block and as a dotted name)")
            out[key] = value
    return out


def _distribution(body: dict[str, Any]) -> str:
    # Without `distribution`, W&B takes the first schema the keys fit (sweeps/config/schema.py).
    dist = body.get("distribution")
    if dist is None:
        if "values" in body:
            return "categorical_w_probabilities" if "probabilities" in body else "categorical"
        if "value" in body:
            return "constant"
        if "min" in body and "max" in body:
            return "int_uniform" if all(_is_int(body[k]) for k in ("min", "max")) else "uniform"
        raise ValueError("no distribution given, and none follows from its keys")
    if dist not in _KEYS:
        raise ValueError(f"unsupported W&B distribution {dist!r} (W&B's are {', '.join(DISTRIBUTIONS)})")
    return str(dist)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    return value


def _tidy(x: float) -> float:
    """``x``, or the short number it is a rounding error away from.

    exp(log(1e-4)) is 1.0000000000000009e-4 and 3 * 0.1 is 0.30000000000000004: rounding errors
    (under 1e-14 relative) away from what was meant, so an exported bound reads back as itself.
    exp(-9), whose twelve-digit form is further off, stays as it is.
    """
    short = float(f"{x:.12g}")
    return short if abs(short - x) <= 1e-14 * abs(x) else x


def _numeric(dist: str, args: dict[str, Any]) -> Mapped:
    nums = {key: _number(key, value) for key, value in args.items()}
    if "min" in nums and nums["min"] > nums["max"]:
        raise ValueError(f"min ({nums['min']}) is greater than max ({nums['max']})")
    for key in ("sigma", "q", "a", "b"):
        if key in nums and nums[key] <= 0:
            raise ValueError(f"{key} must be > 0, got {nums[key]}")
    if dist.endswith("_values") and nums["min"] <= 0:
        raise ValueError(f"{dist} needs min > 0, got {nums['min']}")
    return _NUMERIC[dist](**nums)


# --- the distributions -------------------------------------------------------------------------


def _constant(value: Any) -> Mapped:
    return Mapped({"type": "choice", "values": [value]})


def _categorical(values: Any) -> Mapped:
    return Mapped({"type": "choice", "values": values})


def _categorical_w_probabilities(values: Any, probabilities: Any) -> Mapped:
    return Mapped(
        {"type": "choice", "values": values},
        f"probabilities {probabilities} dropped: Optuna draws choices with equal odds (TPE then learns them)",
    )


_MAPPERS: dict[str, Any] = {
    "constant": _constant,
    "categorical": _categorical,
    "categorical_w_probabilities": _categorical_w_probabilities,
}


def _int_uniform(min: float, max: float) -> Mapped:
    if not (_is_int(min) and _is_int(max)):
        raise ValueError(f"int_uniform takes whole numbers, got min {min!r}, max {max!r}")
    return Mapped({"type": "int_uniform", "min": min, "max": max})


def _uniform(min: float, max: float) -> Mapped:
    return Mapped({"type": "uniform", "min": min, "max": max})


def _log_range(low: float, high: float) -> Mapped:
    return Mapped({"type": "log_uniform", "min": _tidy(low), "max": _tidy(high)})


def _quantised(low: float, high: float, q: float, *, log: bool, base: str | None = None) -> Mapped:
    """W&B's ``round(x / q) * q`` of a draw ``x`` in [low, high]: integers when ``q`` is an int."""
    k_low, k_high = round(low / q), round(high / q)  # halves to even, as numpy's round in W&B
    spec: dict[str, Any]
    if _is_int(q) and log and q == 1:
        first = max(k_low, 1)
        spec = {"type": "int_uniform", "min": first, "max": max(k_high, first), "log": True}
        note = "integers log-scaled by Optuna, not a rounded continuous draw" + (
            " (0 left out: log needs min ≥ 1)" if k_low < 1 else ""
        )
    elif _is_int(q):
        spec = {"type": "int_uniform", "min": k_low * q, "max": k_high * q, "step": q}
        note = (
            f"multiples of {q} with equal odds, not log-scaled (Optuna cannot step a log range)"
            if log
            else "multiples of q with equal odds (W&B gives the two ends half as much)"
        )
    elif log:
        spec = {"type": "log_uniform", "min": _tidy(low), "max": _tidy(high)}
        note = f"not rounded to multiples of {q} (Optuna cannot step a log range)"
    else:
        spec = {"type": "uniform", "min": _tidy(k_low * q), "max": _tidy(k_high * q), "step": q}
        note = "multiples of q with equal odds (W&B gives the two ends half as much)"
    return Mapped(spec, note if base is None else f"{base}; {note}")


def _normal_bounds(mu: float, sigma: float, *, exp: bool = False) -> tuple[float, float]:
    low, high = mu - 3 * sigma, mu + 3 * sigma
    return (math.exp(low), math.exp(high)) if exp else (low, high)


def _beta_bounds(a: float, b: float) -> tuple[float, float]:
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return _tidy(max(0.0, mean - 3 * sd)), _tidy(min(1.0, mean + 3 * sd))


_NORMAL = "a normal cut at mu ± 3 sigma, searched uniformly"
_LOG_NORMAL = "exp of a normal cut at mu ± 3 sigma, searched log-uniformly"
_BETA = "a beta cut at its mean ± 3 sd within [0, 1], searched uniformly"


def _normal(mu: float, sigma: float) -> Mapped:
    return Mapped({"type": "normal", "mu": mu, "sigma": sigma}, f"{_NORMAL} (hpopipe's normal)")


def _q_normal(mu: float, sigma: float, q: float) -> Mapped:
    low, high = _normal_bounds(mu, sigma)
    return _quantised(low, high, q, log=False, base=_NORMAL)


def _log_normal(mu: float, sigma: float) -> Mapped:
    return Mapped(_log_range(*_normal_bounds(mu, sigma, exp=True)).spec, _LOG_NORMAL)


def _q_log_normal(mu: float, sigma: float, q: float) -> Mapped:
    low, high = _normal_bounds(mu, sigma, exp=True)
    return _quantised(low, high, q, log=True, base=_LOG_NORMAL)


def _beta(a: float, b: float) -> Mapped:
    low, high = _beta_bounds(a, b)
    exact = (low, high) == (0.0, 1.0) and a == b == 1
    return Mapped({"type": "uniform", "min": low, "max": high}, None if exact else _BETA)


def _q_beta(a: float, b: float, q: float) -> Mapped:
    low, high = _beta_bounds(a, b)
    return _quantised(low, high, q, log=False, base=_BETA)


# Each takes the distribution's keys (W&B's names, so `min` and `max` shadow the builtins here).
_NUMERIC: dict[str, Any] = {
    "int_uniform": _int_uniform,
    "uniform": _uniform,
    "q_uniform": lambda min, max, q: _quantised(min, max, q, log=False),
    "log_uniform": lambda min, max: _log_range(math.exp(min), math.exp(max)),
    "log_uniform_values": lambda min, max: _log_range(min, max),
    "q_log_uniform": lambda min, max, q: _quantised(math.exp(min), math.exp(max), q, log=True),
    "q_log_uniform_values": lambda min, max, q: _quantised(min, max, q, log=True),
    # exp(-u) for u uniform in [min, max]: 1/x is log-uniform, and so is x, in [e^-max, e^-min].
    "inv_log_uniform": lambda min, max: _log_range(math.exp(-max), math.exp(-min)),
    "inv_log_uniform_values": lambda min, max: _log_range(min, max),
    "normal": _normal,
    "q_normal": _q_normal,
    "log_normal": _log_normal,
    "q_log_normal": _q_log_normal,
    "beta": _beta,
    "q_beta": _q_beta,
}
