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

Beyond the CEL standard library, the string, set and base64 extensions Flux enables are
available (``lowerAscii``, ``split``, ``sets.contains``, …). The engine is the Rust ``cel``
crate (PyPI ``common-expression-language``); its one known deviation from cel-go: ``size()``
of a string counts UTF-8 bytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fluxd.runtime import kstatus

if TYPE_CHECKING:
    import cel as rust_cel


@functools.cache
def _engine() -> ModuleType:
    """The engine, imported at the first expression: its package also loads a command-line
    tool (typer, rich) worth 25 MiB that a process without CEL expressions never needs."""
    import cel

    return cel


@functools.cache
def _extensions() -> dict[str, Callable[..., Any]]:
    """cel-go's ext.Strings, ext.Sets and ext.Encoders, the extensions Flux's environment
    loads."""
    from cel.stdlib import EXTENSIONS

    return {name: function for library in ("strings", "sets", "encoders")
            for name, function in EXTENSIONS[library].items()}

#: The variables of a dependency's ``readyExpr``: the dependent object and its dependency.
READY_EXPR_VARIABLES = ("self", "dep")

# A namespaced function (sets.contains) parses as a member call on an identifier (sets).
_NAMESPACES = frozenset({"sets", "base64", "strings"})
# Comprehension macros bind their first argument as a local variable.
_MACRO_BINDING = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_PARSE_PREFIX = re.compile(r"^Failed to parse expression '.*?': ", re.DOTALL)
_UNDEFINED = re.compile(r"Undefined variable or function: '([^']*)'")


class CELError(ValueError):
    """A CEL expression that does not compile, or did not evaluate to what was needed."""


class Expression:
    """A compiled CEL expression; immutable and safe to share."""

    __slots__ = ("_functions", "_names", "_program", "text")

    def __init__(self, text: str, program: rust_cel.Program,
                 names: frozenset[str], functions: dict[str, Callable[..., Any]]) -> None:
        self.text = text
        self._program = program
        self._names = names
        self._functions = functions

    @classmethod
    def compile(cls, text: str, *, variables: Collection[str] | None = None) -> Expression:
        """Parse ``text``. With ``variables``, any other free identifier is a compile error
        (cel-go's checker for declared variables); without, every identifier is resolved
        from the variables given at evaluation."""
        try:
            program = _engine().compile(text)
        except BaseException as err:
            _reraise_foreign(err)
            detail = _PARSE_PREFIX.sub("", str(err))
            raise CELError(f"failed to parse the CEL expression '{text}': {detail}") from None
        names = frozenset(program.variables())
        called = set(program.functions())
        functions = {
            name: function for name, function in _extensions().items()
            if name in called or ("." in name and name.split(".")[0] in names)
        }
        if variables is not None:
            bound = set(_MACRO_BINDING.findall(text))
            unknown = sorted(names - set(variables) - bound - _NAMESPACES)
            if unknown:
                raise CELError(f"failed to parse the CEL expression '{text}': "
                               f"undeclared reference to '{unknown[0]}'")
        return cls(text, program, names, functions)

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The value of the expression, as plain Python (bool, int, float, str, list, dict,
        datetime, timedelta, bytes or None)."""
        # Only referenced variables cross into the engine: converting a whole object's
        # spec when the expression reads only its status costs five times as much.
        activation = {name: variables[name] for name in self._names if name in variables}
        context: dict[str, Any] | rust_cel.Context = activation
        if self._functions:
            context = _engine().Context(variables=activation, functions=self._functions)
        try:
            return self._program.execute(context)
        except BaseException as err:
            _reraise_foreign(err)
            raise CELError(f"failed to evaluate the CEL expression '{self.text}': "
                           f"{_reason(err)}") from None

    def evaluate_bool(self, variables: Mapping[str, Any]) -> bool:
        """Like ``evaluate``, for expressions that must yield a bool (readyExpr, health
        checks): anything else is a ``CELError``."""
        result = self.evaluate(variables)
        if not isinstance(result, bool):
            raise CELError(f"failed to evaluate CEL expression as boolean: '{self.text}'")
        return result

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def _reraise_foreign(err: BaseException) -> None:
    """Let through what is not the engine's (KeyboardInterrupt, cancellation). The engine
    raises ValueError, KeyError, TypeError and the like, or a PanicException (a
    BaseException) when the Rust side panics: those become CELError."""
    if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
        raise err


def _reason(err: BaseException) -> str:
    # Say it as cel-go does, so messages read the same as Flux's.
    if isinstance(err, KeyError) and err.args:
        return f"no such key: {err.args[0]}"
    text = str(err)
    undefined = _UNDEFINED.search(text)
    if undefined:
        return f"no such attribute(s): {undefined.group(1)}"
    return text


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
