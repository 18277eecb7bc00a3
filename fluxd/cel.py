"""CEL expressions over plain JSON values, with the engine and extensions Flux and
Kubernetes use: the one place fluxd compiles and evaluates CEL.

An ``Expression`` is compiled once and evaluated many times against plain JSON values (dicts,
lists, strings, numbers). A syntax error raises ``CELError`` at compile time. Evaluation
errors also raise ``CELError``; as in cel-go, a missing field is such an error ("no such
key"), never a silent false: guard optional fields with ``has()``.

Without declared variables every free identifier is read from the values given at
evaluation; with ``Expression.compile(text, variables=(...))`` a reference to anything else
fails at compile time.

Beyond the CEL standard library, the string, set and base64 extensions Flux enables are
available (``lowerAscii``, ``split``, ``sets.contains``, …). The engine is the Rust ``cel``
crate (PyPI ``common-expression-language``); its one known deviation from cel-go: ``size()``
of a string counts UTF-8 bytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

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

    @property
    def names(self) -> frozenset[str]:
        """The free identifiers the expression reads (its variables)."""
        return self._names

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The value of the expression, as plain Python (bool, int, float, str, list, dict,
        datetime, timedelta, bytes or None)."""
        # Only referenced variables cross into the engine: converting a whole object's
        # spec when the expression reads only its status costs five times as much.
        activation = {name: variables[name] for name in self._names if name in variables}
        context: dict[str, Any] | rust_cel.Context = activation
        try:
            if self._functions:
                # converting the variables can fail too (a lone surrogate in a string)
                context = _engine().Context(variables=activation, functions=self._functions)
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
