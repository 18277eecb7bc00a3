"""CEL expressions as Flux evaluates them: health checks and dependency ``readyExpr``.

An ``Expression`` is compiled once and evaluated many times against plain JSON values (the
informer cache's dicts). A syntax error raises ``CELError`` at compile time. Evaluation errors
also raise ``CELError``; as in Flux (``fluxcd/pkg`` ``runtime/cel``), a missing field is such an
error ("no such key"), never a silent false: guard optional fields with ``has()``.

Two ways to bind variables, as Flux does:

- **Health checks** (``healthCheckExprs``): the object's top-level fields are the variables
  (``status``, ``metadata``, ``spec``, …), parsed without declarations because custom resources
  may have any top-level fields. ``health_from_exprs`` applies Flux's rules: a stale
  ``status.observedGeneration`` → InProgress; then inProgress → failed → current, the first
  true one wins; none true → InProgress; an evaluation error → Unknown with the error.
- **Dependencies** (``readyExpr``): declared variables ``self`` and ``dep``
  (``Expression.compile(text, variables=READY_EXPR_VARIABLES)``): a reference to anything else
  fails at compile time, which the reconciler treats as terminal.

Compiling and evaluating is ``fluxd.cel`` (re-exported here: ``Expression``, ``CELError``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fluxd.cel import CELError, Expression
from fluxd.runtime import kstatus

__all__ = ["READY_EXPR_VARIABLES", "CELError", "Expression", "HealthCheck",
           "compile_health_checks", "group_of", "health_from_exprs", "match_health_check"]

#: The variables of a dependency's ``readyExpr``: the dependent object and its dependency.
READY_EXPR_VARIABLES = ("self", "dep")


# --------------------------------------------------------------------------- health checks


def health_from_exprs(obj: Mapping[str, Any], *, current: Expression | None,
                      in_progress: Expression | None = None,
                      failed: Expression | None = None) -> kstatus.Result | None:
    """The status of ``obj`` by Flux's custom health check rules (RFC 0009), or None when no
    expression is given (the caller then uses kstatus). Evaluation errors read Unknown, with
    the error as message, as a kstatus poller reports a status function's error."""
    if current is None and in_progress is None and failed is None:
        return None
    return _health(obj, ((in_progress, kstatus.Status.InProgress),
                         (failed, kstatus.Status.Failed),
                         (current, kstatus.Status.Current)))


def _health(obj: Mapping[str, Any],
            ordered: Iterable[tuple[Expression | None, kstatus.Status]]) -> kstatus.Result:
    stale = _stale_generation(obj)
    if stale is not None:
        return stale
    for expression, status in ordered:
        if expression is None:
            continue
        try:
            if expression.evaluate_bool(obj):
                return kstatus.Result(status, "")
        except CELError as err:
            return kstatus.Result(kstatus.Status.Unknown, str(err))
    return kstatus.Result(kstatus.Status.InProgress, "")


def _stale_generation(obj: Mapping[str, Any]) -> kstatus.Result | None:
    status, metadata = obj.get("status"), obj.get("metadata")
    observed = status.get("observedGeneration") if isinstance(status, Mapping) else None
    if observed is None:
        return None
    generation = metadata.get("generation") if isinstance(metadata, Mapping) else None
    for name, value in (("status.observedGeneration", observed),
                        ("metadata.generation", generation)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return kstatus.Result(kstatus.Status.Unknown, f"{name} is {value!r}, "
                                  "expected an integer")
    if generation is not None and observed != generation:
        return kstatus.Result(kstatus.Status.InProgress, "")
    return None


@dataclass(frozen=True)
class HealthCheck:
    """One compiled ``CustomHealthCheck`` entry."""

    api_version: str
    kind: str
    current: Expression
    in_progress: Expression | None = None
    failed: Expression | None = None

    def evaluate(self, obj: Mapping[str, Any]) -> kstatus.Result:
        return _health(obj, ((self.in_progress, kstatus.Status.InProgress),
                             (self.failed, kstatus.Status.Failed),
                             (self.current, kstatus.Status.Current)))


def group_of(api_version: str) -> str:
    """The API group of ``group/version`` ("" for the core group and for what does not parse)."""
    return api_version.split("/")[0] if api_version.count("/") == 1 else ""


def compile_health_checks(
        exprs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], HealthCheck]:
    """Compile ``spec.healthCheckExprs`` into checks keyed by (group, kind). Raises
    ``CELError`` for a missing ``current``, a syntax error or two entries for the same group
    and kind: Flux then marks the object Stalled with ``InvalidCELExpression``."""
    checks: dict[tuple[str, str], HealthCheck] = {}
    for i, entry in enumerate(exprs):
        api_version, kind = str(entry.get("apiVersion", "")), str(entry.get("kind", ""))
        key = (group_of(api_version), kind)
        if key in checks:
            name = f"{kind}.{key[0]}" if key[0] else kind
            raise CELError(f"duplicate custom health check for GroupKind {name} "
                           f"at healthchecks[{i}]")
        try:
            compiled = {field: _compile_optional(entry, field)
                        for field in ("current", "inProgress", "failed")}
            current = compiled["current"]
            if current is None:
                raise CELError("expression Current not specified")
        except CELError as err:
            raise CELError(f"failed to create custom status evaluator for healthchecks[{i}]: "
                           f"{err}") from None
        checks[key] = HealthCheck(api_version, kind, current,
                                  compiled["inProgress"], compiled["failed"])
    return checks


def _compile_optional(entry: Mapping[str, Any], field: str) -> Expression | None:
    text = entry.get(field) or ""
    if not text:
        return None
    try:
        return Expression.compile(str(text))
    except CELError as err:
        label = field[0].upper() + field[1:]
        raise CELError(f"failed to parse the expression {label}: {err}") from None


def match_health_check(exprs: Iterable[Mapping[str, Any]], api_version: str,
                       kind: str) -> Mapping[str, Any] | None:
    """The ``healthCheckExprs`` entry for an object: same API group (any version) and same
    kind, as Flux's status reader selects by GroupKind; the first such entry."""
    group = group_of(api_version)
    for entry in exprs:
        if (entry.get("kind") == kind
                and group_of(str(entry.get("apiVersion", ""))) == group):
            return entry
    return None
