"""fluxd.logging: Flux's JSON lines, per-task context, and no secrets on the stream."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from fluxd import logging as fluxlog
from fluxd.clock import FakeClock

pytestmark = pytest.mark.anyio

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """The root logger writing JSON to a buffer; the root logger is restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    buffer = io.StringIO()
    fluxlog.setup("info", "json", stream=buffer)
    try:
        yield buffer
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


log = logging.getLogger("fluxd.test")


def test_a_line_has_zaps_keys_in_zaps_order(stream: io.StringIO) -> None:
    log.info("Reconciliation finished in %s", "1.2s", extra={"revision": "main@sha1:abc"})
    [line] = lines(stream)
    assert list(line) == ["level", "ts", "logger", "msg", "revision"]
    assert line["level"] == "info"
    assert TS.match(line["ts"]), line["ts"]
    assert line["logger"] == "fluxd.test"
    assert line["msg"] == "Reconciliation finished in 1.2s"
    assert line["revision"] == "main@sha1:abc"


def test_the_root_logger_has_no_logger_key(stream: io.StringIO) -> None:
    logging.getLogger().warning("careful")
    [line] = lines(stream)
    assert "logger" not in line
    assert line["level"] == "warn"


def test_bound_fields_come_after_msg_and_before_the_error(stream: io.StringIO) -> None:
    with fluxlog.bind(controller="kustomization", controllerGroup="kustomize.toolkit.fluxcd.io",
                      controllerKind="Kustomization", name="podinfo", namespace="default",
                      reconcileID="7f6e"):
        try:
            raise RuntimeError("apply failed")
        except RuntimeError:
            log.exception("Reconciler error")
    [line] = lines(stream)
    # a reconcile's line carries controller-runtime's context and no logger key, as Flux's
    assert list(line) == ["level", "ts", "msg", "controller", "controllerGroup",
                          "controllerKind", "name", "namespace", "reconcileID", "error"]
    assert line["level"] == "error"
    assert line["error"] == "apply failed"
    assert "stacktrace" not in line  # only at debug level and below, as Flux does


def test_an_error_can_be_passed_as_a_field(stream: io.StringIO) -> None:
    log.error("fetch failed", extra={"error": TimeoutError()})
    assert lines(stream)[0]["error"] == "TimeoutError"


def test_reserved_record_names_are_passed_with_fields(stream: io.StringIO) -> None:
    log.info("applied", extra=fluxlog.fields(name="podinfo", msg="not the message"))
    [line] = lines(stream)
    assert line["name"] == "podinfo"
    assert line["msg"] == "applied"  # the message key is never overwritten by a field
    assert line["msg_"] == "not the message"


def test_bind_nests_and_restores(stream: io.StringIO) -> None:
    with fluxlog.bind(controller="helmrelease", name="outer"):
        with fluxlog.bind(name="inner"):
            log.info("one")
        log.info("two")
    log.info("three")
    one, two, three = lines(stream)
    assert (one["controller"], one["name"]) == ("helmrelease", "inner")
    assert (two["controller"], two["name"]) == ("helmrelease", "outer")
    assert "controller" not in three and "name" not in three
    assert fluxlog.bound() == {}


async def test_bound_fields_survive_awaits_and_stay_in_their_task(
        stream: io.StringIO) -> None:
    first_bound, second_logged = anyio.Event(), anyio.Event()

    async def first() -> None:
        with fluxlog.bind(name="first", reconcileID="1"):
            first_bound.set()
            await second_logged.wait()  # the other task runs and logs meanwhile
            log.info("first after await")

    async def second() -> None:
        await first_bound.wait()
        with fluxlog.bind(name="second", reconcileID="2"):
            await anyio.lowlevel.checkpoint()
            log.info("second")
        second_logged.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        tg.start_soon(second)

    by_msg = {line["msg"]: line for line in lines(stream)}
    assert (by_msg["second"]["name"], by_msg["second"]["reconcileID"]) == ("second", "2")
    assert (by_msg["first after await"]["name"],
            by_msg["first after await"]["reconcileID"]) == ("first", "1")
    assert fluxlog.bound() == {}


async def test_tasks_started_inside_a_binding_inherit_it(stream: io.StringIO) -> None:
    async def child() -> None:
        log.info("from child")

    with fluxlog.bind(controller="gitrepository", name="flux-system"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
    [line] = lines(stream)
    assert (line["controller"], line["name"]) == ("gitrepository", "flux-system")


def test_secret_values_are_masked_at_any_depth(stream: io.StringIO) -> None:
    secret = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "git-auth", "namespace": "flux-system"},
        "data": {"username": "Z2l0", "password": "aHVudGVyMg=="},
        "stringData": {"ca.crt": "-----BEGIN CERTIFICATE-----"},
    }
    log.info("read secret", extra={
        "object": secret, "password": "hunter2", "bearerToken": "eyJhbGci",
        "token": "ghp_123", "identity": "-----BEGIN OPENSSH PRIVATE KEY-----",
        "ca.crt": "-----BEGIN CERTIFICATE-----", "headers": [{"Authorization": "Bearer x"}],
        "sops.asc": "-----BEGIN PGP PRIVATE KEY BLOCK-----",
    })
    text = stream.getvalue()
    for leaked in ("aHVudGVyMg", "Z2l0", "hunter2", "eyJhbGci", "ghp_123", "BEGIN",
                   "Bearer x"):
        assert leaked not in text, leaked
    [line] = lines(stream)
    assert line["object"]["data"] == {"username": "***", "password": "***"}
    assert line["object"]["stringData"] == {"ca.crt": "***"}
    assert line["object"]["metadata"] == {"name": "git-auth", "namespace": "flux-system"}
    assert line["password"] == line["token"] == line["identity"] == "***"
    assert line["headers"] == [{"Authorization": "***"}]


def test_url_credentials_are_stripped_from_message_fields_and_error(
        stream: io.StringIO) -> None:
    url = "https://flux:ghp_secret@github.com/org/repo.git"
    with fluxlog.bind(url=url):
        log.error("cloning %s", url, extra={
            "error": ValueError(f"auth failed for {url}"),
            "sources": ["ssh://git:pw@example.com:22/repo", "oci://ghcr.io/org/app"],
        })
    text = stream.getvalue()
    assert "ghp_secret" not in text and ":pw@" not in text
    [line] = lines(stream)
    assert line["msg"] == "cloning https://github.com/org/repo.git"
    assert line["url"] == "https://github.com/org/repo.git"
    assert line["error"] == "auth failed for https://github.com/org/repo.git"
    assert line["sources"] == ["ssh://example.com:22/repo", "oci://ghcr.io/org/app"]


def test_url_without_userinfo_and_scp_style_addresses_are_left_alone() -> None:
    for text in ("https://github.com/org/repo", "git@github.com:org/repo.git",
                 "mail me at admin@example.com"):
        assert fluxlog.strip_url_credentials(text) == text


def test_setup_again_changes_the_level_without_adding_handlers(stream: io.StringIO) -> None:
    log.debug("hidden")
    fluxlog.setup("debug", "json", stream=stream)
    log.debug("shown")
    fluxlog.setup("error", "json", stream=stream)
    log.info("hidden too")
    log.error("shown too")
    assert [line["msg"] for line in lines(stream)] == ["shown", "shown too"]
    assert [line["level"] for line in lines(stream)] == ["debug", "error"]
    ours = [h for h in logging.getLogger().handlers if isinstance(h, fluxlog._Handler)]
    assert len(ours) == 1


def test_trace_level_and_stacktraces_below_info(stream: io.StringIO) -> None:
    fluxlog.setup("trace", "json", stream=stream)
    log.log(fluxlog.TRACE, "very detailed")
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("failed")
    trace, failed = lines(stream)
    assert trace["level"] == "trace"
    assert "KeyError" in failed["stacktrace"]


def test_setup_can_switch_to_the_console_encoding(stream: io.StringIO) -> None:
    fluxlog.setup("info", "console", stream=stream)
    with fluxlog.bind(controller="kustomization", name="apps"):
        log.info("applied https://u:p@example.com/x")
    ts, level, logger, msg, rest = stream.getvalue().rstrip("\n").split("\t")
    assert TS.match(ts)
    assert (level, logger, msg) == ("info", "fluxd.test", "applied https://example.com/x")
    assert json.loads(rest) == {"controller": "kustomization", "name": "apps"}


def test_setup_refuses_unknown_levels_and_encodings() -> None:
    with pytest.raises(ValueError, match="log level"):
        fluxlog.setup("verbose", "json", stream=io.StringIO())
    with pytest.raises(ValueError, match="log encoding"):
        fluxlog.setup("info", "xml", stream=io.StringIO())


def test_a_throttle_lets_a_burst_through_per_interval_and_counts_the_rest() -> None:
    clock = FakeClock()
    throttle = fluxlog.LogThrottle(interval=10, burst=2, monotonic=clock.monotonic)
    assert [throttle.admit() for _ in range(5)] == [0, 0, None, None, None]
    assert throttle.overdue() == 0  # the interval is not over: the next line may carry them
    clock.advance(10)
    assert throttle.admit() == 3
    assert throttle.admit() == 0


def test_a_throttle_hands_over_what_no_later_line_carried_once_the_interval_is_over(
        ) -> None:
    clock = FakeClock()
    throttle = fluxlog.LogThrottle(interval=10, burst=1, monotonic=clock.monotonic)
    assert [throttle.admit() for _ in range(4)] == [0, None, None, None]
    clock.advance(10)
    assert throttle.overdue() == 3
    assert throttle.overdue() == 0
    assert throttle.admit() == 0
