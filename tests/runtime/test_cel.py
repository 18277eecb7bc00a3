"""fluxd.runtime.cel: compiling and evaluating CEL as Flux does, the health check rules of
``fluxcd/pkg`` ``runtime/cel`` (cases from its ``status_evaluator_test.go``), the selection of a
health check by group and kind, and dependency ``readyExpr``."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fluxd.runtime.cel import (
    READY_EXPR_VARIABLES,
    CELError,
    Expression,
    compile_health_checks,
    health_from_exprs,
    match_health_check,
)
from fluxd.runtime.kstatus import Result, Status

READY_TRUE = "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')"
READY_FALSE = "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'False')"
STALE = "has(status.observedGeneration) && metadata.generation != status.observedGeneration"


def compile_(text: str) -> Expression:
    return Expression.compile(text)


def widget(ready: str | None = "True", generation: int = 1, observed: int = 1) -> dict[str, Any]:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready, "reason": "R"}]
    return {"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "generation": generation},
            "spec": {"size": 3},
            "status": {"observedGeneration": observed, "conditions": conditions}}


def flags(current: bool, in_progress: bool, failed: bool) -> dict[str, Any]:
    return {"data": {"current": current, "inProgress": in_progress, "failed": failed}}


def by_flags(obj: dict[str, Any]) -> Result | None:
    return health_from_exprs(obj, current=compile_("data.current"),
                             in_progress=compile_("data.inProgress"),
                             failed=compile_("data.failed"))


# --------------------------------------------------------------------------- compiling


def test_a_syntax_error_fails_at_compile_time_naming_the_expression() -> None:
    with pytest.raises(CELError, match=r"failed to parse the CEL expression 'status\.': .*Syntax"):
        Expression.compile("status.")


def test_an_empty_expression_does_not_compile() -> None:
    with pytest.raises(CELError):
        Expression.compile("")


def test_an_expression_compiles_once_and_evaluates_against_many_objects() -> None:
    expression = Expression.compile(READY_TRUE)
    assert expression.evaluate(widget("True")) is True
    assert expression.evaluate(widget("False")) is False
    assert expression.text == READY_TRUE


# --------------------------------------------------------------------------- evaluating


def test_a_missing_field_is_an_evaluation_error_not_false() -> None:
    message = "failed to evaluate the CEL expression 'status.phase == 'Bound'': no such key: phase"
    with pytest.raises(CELError, match=re.escape(message)):
        Expression.compile("status.phase == 'Bound'").evaluate(widget())


def test_a_missing_top_level_field_is_an_evaluation_error() -> None:
    with pytest.raises(CELError, match=r"no such attribute\(s\): status"):
        Expression.compile(STALE).evaluate({"metadata": {"generation": 1}})


def test_has_guards_an_optional_field() -> None:
    expression = Expression.compile("has(status.phase) && status.phase == 'Bound'")
    assert expression.evaluate(widget()) is False
    assert expression.evaluate({"status": {"phase": "Bound"}}) is True


def test_evaluate_returns_plain_python_values() -> None:
    expression = Expression.compile("status.conditions.map(c, c.type)")
    assert expression.evaluate(widget()) == ["Ready"]
    assert Expression.compile("spec.size * 2").evaluate(widget()) == 6


def test_evaluate_bool_rejects_a_result_that_is_not_a_bool() -> None:
    message = "failed to evaluate CEL expression as boolean: 'spec.size'"
    with pytest.raises(CELError, match=re.escape(message)):
        Expression.compile("spec.size").evaluate_bool(widget())
    assert Expression.compile("spec.size == 3").evaluate_bool(widget()) is True


def test_the_comprehension_macros_work_as_in_kubernetes() -> None:
    obj = {"items": [{"n": 1}, {"n": 2}, {"n": 3}], "labels": {"app": "a", "tier": "web"}}
    assert Expression.compile("items.all(i, i.n > 0)").evaluate(obj) is True
    assert Expression.compile("items.exists(i, i.n == 2)").evaluate(obj) is True
    assert Expression.compile("items.exists_one(i, i.n > 2)").evaluate(obj) is True
    assert Expression.compile("items.filter(i, i.n > 1).map(i, i.n)").evaluate(obj) == [2, 3]
    assert Expression.compile("labels.all(k, k.size() > 2)").evaluate(obj) is True
    assert Expression.compile("'tier' in labels && size(items) == 3").evaluate(obj) is True


def test_numbers_compare_across_int_and_double() -> None:
    # Flux's environment compares numbers across types; JSON numbers can arrive as either.
    assert Expression.compile("x == 2 && x < 2.5").evaluate({"x": 2.0}) is True


def test_a_bool_is_not_a_number() -> None:
    assert Expression.compile("x == 1").evaluate({"x": True}) is False


def test_the_string_set_and_encoder_extensions_flux_loads_are_available() -> None:
    obj = {"name": "Pod-Info", "tags": ["a", "b"]}
    assert Expression.compile("name.lowerAscii()").evaluate(obj) == "pod-info"
    assert Expression.compile("name.split('-')").evaluate(obj) == ["Pod", "Info"]
    assert Expression.compile("tags.join(',')").evaluate(obj) == "a,b"
    assert Expression.compile("sets.contains(tags, ['b'])").evaluate(obj) is True
    assert Expression.compile("base64.encode(b'hi')").evaluate(obj) == "aGk="
    assert Expression.compile("name.startsWith('Pod') && name.matches('^P.*o$')").evaluate(obj)


def test_short_circuits_absorb_errors_as_cel_does() -> None:
    assert Expression.compile("false && status.nope").evaluate(widget()) is False
    assert Expression.compile("status.nope || true").evaluate(widget()) is True


def test_runtime_errors_of_every_kind_become_cel_errors() -> None:
    for text in ("1 / x", "items[5]", "'a' + x", "x.lowerAscii()"):
        with pytest.raises(CELError, match="failed to evaluate"):
            Expression.compile(text).evaluate({"x": 0, "items": []})


def test_a_value_the_engine_cannot_take_is_a_cel_error_also_with_extension_functions(
        ) -> None:
    # a lone surrogate has no UTF-8 form: converting it fails before evaluation starts
    for text in ("x.lowerAscii() == 'a'", "x == 'a'"):
        with pytest.raises(CELError, match="failed to evaluate"):
            Expression.compile(text).evaluate({"x": "\ud800"})


# --------------------------------------------------------------------------- readyExpr


def test_a_ready_expr_sees_self_and_dep() -> None:
    expression = Expression.compile(
        "dep.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True') && "
        "dep.metadata.labels.env == self.metadata.labels.env",
        variables=READY_EXPR_VARIABLES)
    me = {"metadata": {"labels": {"env": "prod"}}}
    dep = {"metadata": {"labels": {"env": "prod"}},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert expression.evaluate_bool({"self": me, "dep": dep}) is True
    dep["metadata"]["labels"]["env"] = "dev"
    assert expression.evaluate_bool({"self": me, "dep": dep}) is False


def test_a_ready_expr_naming_an_undeclared_variable_does_not_compile() -> None:
    with pytest.raises(CELError, match="undeclared reference to 'status'"):
        Expression.compile("status.ready", variables=READY_EXPR_VARIABLES)


def test_macro_variables_and_extension_namespaces_are_not_undeclared_references() -> None:
    Expression.compile("dep.status.conditions.all(c, c.status == 'True')",
                       variables=READY_EXPR_VARIABLES)
    Expression.compile("sets.contains(dep.spec.tags, self.spec.tags)",
                       variables=READY_EXPR_VARIABLES)


# --------------------------------------------------------------------------- health checks


def test_health_checks_evaluate_in_progress_first() -> None:
    assert by_flags(flags(current=True, in_progress=True, failed=True)) == \
        Result(Status.InProgress, "")


def test_health_checks_evaluate_failed_before_current() -> None:
    assert by_flags(flags(current=True, in_progress=False, failed=True)) == \
        Result(Status.Failed, "")


def test_health_checks_read_current_when_only_current_holds() -> None:
    assert by_flags(flags(current=True, in_progress=False, failed=False)) == \
        Result(Status.Current, "")


def test_health_checks_read_in_progress_when_nothing_holds() -> None:
    assert by_flags(flags(current=False, in_progress=False, failed=False)) == \
        Result(Status.InProgress, "")


def test_a_stale_observed_generation_reads_in_progress_before_any_expression() -> None:
    # The expressions would fail on this object (no conditions): they are never evaluated.
    obj = {"metadata": {"generation": 2}, "status": {"observedGeneration": 1}}
    result = health_from_exprs(obj, current=compile_(READY_TRUE), failed=compile_(READY_FALSE))
    assert result == Result(Status.InProgress, "")


def test_an_evaluation_error_reads_unknown_with_the_error() -> None:
    result = health_from_exprs({"status": {}}, current=compile_(READY_TRUE),
                               in_progress=compile_(STALE), failed=compile_(READY_FALSE))
    assert result is not None and result.status is Status.Unknown
    assert "no such key: conditions" in result.message


def test_a_health_expression_that_is_not_boolean_reads_unknown() -> None:
    result = health_from_exprs(widget(), current=compile_("spec.size"))
    assert result == Result(Status.Unknown,
                            "failed to evaluate CEL expression as boolean: 'spec.size'")


def test_an_empty_conditions_list_satisfies_the_failed_filter_first() -> None:
    # filter(...).all(...) of nothing is true, and failed is asked before current.
    result = health_from_exprs(widget(ready=None), current=compile_(READY_TRUE),
                               failed=compile_(READY_FALSE))
    assert result == Result(Status.Failed, "")


def test_a_ready_widget_is_current_and_a_not_ready_one_failed() -> None:
    exprs = {"current": compile_(READY_TRUE), "failed": compile_(READY_FALSE),
             "in_progress": compile_(STALE)}
    assert health_from_exprs(widget("True"), **exprs) == Result(Status.Current, "")
    assert health_from_exprs(widget("False"), **exprs) == Result(Status.Failed, "")
    assert health_from_exprs(widget("Unknown"), **exprs) == Result(Status.InProgress, "")


def test_without_expressions_the_caller_falls_back_to_kstatus() -> None:
    assert health_from_exprs(widget(), current=None) is None


# --------------------------------------------------------------------------- selection


CHECKS = [
    {"apiVersion": "example.com/v1", "kind": "Widget", "current": "true"},
    {"apiVersion": "example.com/v1beta1", "kind": "Gadget", "current": "false"},
    {"apiVersion": "v1", "kind": "Service", "current": "true"},
]


def test_a_health_check_matches_by_group_and_kind_whatever_the_version() -> None:
    assert match_health_check(CHECKS, "example.com/v2", "Widget") is CHECKS[0]
    assert match_health_check(CHECKS, "example.com/v1", "Gadget") is CHECKS[1]


def test_the_same_kind_in_another_group_does_not_match() -> None:
    assert match_health_check(CHECKS, "other.io/v1", "Widget") is None
    assert match_health_check(CHECKS, "example.com/v1", "Doohickey") is None


def test_a_core_group_health_check_matches_core_kinds_only() -> None:
    assert match_health_check(CHECKS, "v1", "Service") is CHECKS[2]
    assert match_health_check(CHECKS, "example.com/v1", "Service") is None


def test_an_entry_without_a_kind_matches_nothing() -> None:
    # kind is required in CustomHealthCheck; Flux keys its readers by group and kind.
    assert match_health_check([{"apiVersion": "example.com/v1", "current": "true"}],
                              "example.com/v1", "Widget") is None


def test_the_first_entry_for_a_group_and_kind_wins() -> None:
    twice = [CHECKS[0], {**CHECKS[0], "current": "false"}]
    assert match_health_check(twice, "example.com/v1", "Widget") is twice[0]


def test_compiled_health_checks_are_keyed_by_group_and_kind() -> None:
    checks = compile_health_checks(CHECKS)
    assert sorted(checks) == [("", "Service"), ("example.com", "Gadget"),
                              ("example.com", "Widget")]
    assert checks[("example.com", "Widget")].evaluate(widget()) == Result(Status.Current, "")
    assert checks[("example.com", "Gadget")].evaluate(widget()) == Result(Status.InProgress, "")


def test_compiling_health_checks_requires_current() -> None:
    with pytest.raises(CELError, match=r"healthchecks\[0\]: expression Current not specified"):
        compile_health_checks([{"apiVersion": "a.io/v1", "kind": "A", "failed": "true"}])


def test_compiling_health_checks_names_the_broken_expression() -> None:
    broken = [CHECKS[0], {"apiVersion": "a.io/v1", "kind": "A", "current": "true",
                          "inProgress": "status."}]
    with pytest.raises(CELError, match=r"for healthchecks\[1\]: failed to parse the "
                                       r"expression InProgress: failed to parse the CEL"):
        compile_health_checks(broken)


def test_compiling_health_checks_rejects_two_entries_for_one_group_and_kind() -> None:
    twice = [CHECKS[0], {**CHECKS[0], "apiVersion": "example.com/v2"}]
    with pytest.raises(CELError, match=r"duplicate custom health check for GroupKind "
                                       r"Widget.example.com at healthchecks\[1\]"):
        compile_health_checks(twice)


def test_the_namespaces_are_those_of_the_engine_s_extensions() -> None:
    from cel.stdlib import EXTENSIONS

    from fluxd.cel import _NAMESPACES
    found = {name.split(".")[0] for library in ("strings", "sets", "encoders")
             for name in EXTENSIONS[library] if "." in name}
    assert found == _NAMESPACES


def test_the_engine_is_loaded_only_when_an_expression_is_compiled() -> None:
    import subprocess
    import sys
    code = ("import sys, fluxd.app, fluxd.runtime.cel as c; assert 'cel' not in sys.modules; "
            "c.Expression.compile('1 == 1'); assert 'cel' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
