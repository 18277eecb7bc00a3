"""Leader election on a Lease in the cluster fixture."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from fluxd.clock import FakeClock, SystemClock
from fluxd.kube import Conflict, KubeClient
from fluxd.runtime.leader import (
    ElectionConfig,
    LeaderElector,
    LeadershipLost,
    LeaseNamespaceNotFound,
    lease_name,
)
from tests.conftest import Cluster

pytestmark = pytest.mark.anyio

FAST = {"lease_duration": 1.0, "renew_deadline": 0.8, "retry_period": 0.1}


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    async with await KubeClient.connect(clock=SystemClock(),
                                        kubeconfig=str(cluster.kubeconfig)) as client:
        yield client


def elector(kube: KubeClient, namespace: str, name: str, identity: str) -> LeaderElector:
    return LeaderElector(kube, ElectionConfig(namespace=namespace, name=name,
                                              identity=identity, **FAST), clock=SystemClock())


async def test_exactly_one_of_two_candidates_leads(kube: KubeClient, namespace: str) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    a, b = elector(kube, namespace, name, "a"), elector(kube, namespace, name, "b")
    tasks = {asyncio.create_task(a.acquire()): a, asyncio.create_task(b.acquire()): b}
    done, pending = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1
    winner = tasks[done.pop()]
    loser = a if winner is b else b
    holding = asyncio.create_task(winner.hold())
    await asyncio.sleep(1.5)  # longer than the lease: renewals keep it
    assert winner.is_leader and not loser.is_leader
    assert all(not t.done() for t in pending)
    lease = await kube.get("coordination.k8s.io/v1", "Lease", name, namespace)
    assert lease["spec"]["holderIdentity"] == winner.config.identity
    holding.cancel()
    for task in pending:
        task.cancel()
    await asyncio.gather(holding, *pending, return_exceptions=True)


async def test_killed_leader_is_replaced_within_the_lease_duration(kube: KubeClient,
                                                                   namespace: str) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    leader, standby = elector(kube, namespace, name, "a"), elector(kube, namespace, name, "b")
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())
    waiting = asyncio.create_task(standby.acquire())
    await asyncio.sleep(0.3)
    holding.cancel()  # a crash: no release
    await asyncio.gather(holding, return_exceptions=True)
    killed_at = asyncio.get_running_loop().time()
    await asyncio.wait_for(waiting, 5)
    took = asyncio.get_running_loop().time() - killed_at
    assert standby.is_leader
    assert took <= FAST["lease_duration"] + 2 * FAST["retry_period"] + 0.3
    lease = await kube.get("coordination.k8s.io/v1", "Lease", name, namespace)
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1


async def test_released_lease_is_taken_at_once(kube: KubeClient, namespace: str) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    leader, standby = elector(kube, namespace, name, "a"), elector(kube, namespace, name, "b")
    await leader.acquire()
    waiting = asyncio.create_task(standby.acquire())
    await asyncio.sleep(0.2)
    await leader.release()
    released_at = asyncio.get_running_loop().time()
    await asyncio.wait_for(waiting, 5)
    assert asyncio.get_running_loop().time() - released_at < FAST["lease_duration"]
    assert not leader.is_leader and standby.is_leader


async def test_a_leader_that_cannot_renew_loses_leadership(kube: KubeClient,
                                                           namespace: str) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    changes: list[bool] = []
    leader = LeaderElector(kube, ElectionConfig(namespace=namespace, name=name, identity="a",
                                                **FAST),
                           clock=SystemClock(), on_change=changes.append)
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())

    async def usurp() -> None:
        while True:  # another writer keeps taking the lease by force
            lease = await kube.get("coordination.k8s.io/v1", "Lease", name, namespace)
            lease["spec"]["holderIdentity"] = "usurper"
            lease["spec"]["renewTime"] = "2030-01-01T00:00:00.000000Z"
            with contextlib.suppress(Conflict):  # a conflict just means try again
                await kube.update(lease)
            await asyncio.sleep(0.05)

    thief = asyncio.create_task(usurp())
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(holding, 5)
    thief.cancel()
    await asyncio.gather(thief, return_exceptions=True)
    assert changes == [True, False]


class SteppingClock(FakeClock):
    """A fake clock that tells the test each time its sleeper goes to sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.asleep = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asleep.set()
        await super().sleep(seconds)


async def run_on(clock: SteppingClock, task: asyncio.Task[None], *, step: float) -> None:
    """Advance ``clock`` by ``step`` whenever ``task`` sleeps, until it ends (its
    outcome is raised); the API calls in between take the real time they take."""
    for _ in range(100):
        asleep = asyncio.ensure_future(clock.asleep.wait())
        await asyncio.wait({task, asleep}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        asleep.cancel()
        await asyncio.gather(asleep, return_exceptions=True)
        if task.done():
            return task.result()
        assert clock.asleep.is_set(), "the task neither slept nor ended within 10 s"
        clock.asleep.clear()
        clock.advance(step)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise AssertionError("the task did not end within 100 steps of the clock")


async def test_a_lease_namespace_that_does_not_exist_fails_at_once_naming_it(
        kube: KubeClient) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    candidate = LeaderElector(kube, ElectionConfig(
        namespace=missing, name="fluxd-leader-election", identity="a",
        namespace_origin="watch.runtime_namespace"), clock=FakeClock())
    # on the fake clock a retry would wait for ever: only an immediate error ends this
    with pytest.raises(LeaseNamespaceNotFound) as raised:
        await asyncio.wait_for(candidate.acquire(), 10)
    assert str(raised.value) == (f'the leader election Lease namespace "{missing}" does '
                                 "not exist; it is set by watch.runtime_namespace")
    assert (raised.value.namespace, raised.value.lease) == (missing, "fluxd-leader-election")
    assert not candidate.is_leader


async def test_a_leader_whose_namespace_is_deleted_loses_leadership_at_the_renew_deadline(
        kube: KubeClient, cluster: Cluster) -> None:
    doomed = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", doomed)
    clock = SteppingClock()
    changes: list[bool] = []
    leader = LeaderElector(kube, ElectionConfig(  # Flux's 35 s / 30 s / 5 s
        namespace=doomed, name="fluxd-leader-election", identity="a",
        namespace_origin="leader_election.namespace"), clock=clock,
        on_change=changes.append)
    await leader.acquire()
    cluster.kubectl("delete", "namespace", doomed, "--wait=true", "--timeout=60s",
                    timeout=90)
    started = clock.monotonic()
    with pytest.raises(LeadershipLost) as lost:
        await run_on(clock, asyncio.ensure_future(leader.hold()), step=5)
    assert clock.monotonic() - started == 30  # renewals were tried until the deadline
    assert str(lost.value) == (
        f"could not renew lease {doomed}/fluxd-leader-election within 30s: the leader "
        f'election Lease namespace "{doomed}" does not exist; it is set by '
        "leader_election.namespace")
    assert changes == [True, False]


async def test_leadership_lost_says_who_holds_the_lease(kube: KubeClient,
                                                       namespace: str) -> None:
    clock = SteppingClock()
    leader = LeaderElector(kube, ElectionConfig(namespace=namespace, name="lease",
                                                identity="a"), clock=clock)
    await leader.acquire()
    lease = await kube.get("coordination.k8s.io/v1", "Lease", "lease", namespace)
    # another holder: its lease (35 s) outlasts our renew deadline (30 s)
    lease["spec"]["holderIdentity"] = "usurper"
    await kube.update(lease)
    holding = asyncio.ensure_future(leader.hold())
    with pytest.raises(LeadershipLost, match=r"within 30s: it is held by usurper$"):
        await run_on(clock, holding, step=5)


def test_lease_name_includes_the_shard_selector() -> None:
    assert lease_name("fluxd-leader-election", None) == "fluxd-leader-election"
    one = lease_name("fluxd-leader-election", "sharding.fluxcd.io/key=shard1")
    two = lease_name("fluxd-leader-election", "sharding.fluxcd.io/key=shard2")
    main = lease_name("fluxd-leader-election", "!sharding.fluxcd.io/key")
    assert len({one, two, main}) == 3
    assert one.startswith("fluxd-leader-election-sharding-fluxcd-io-key-shard1-")
    assert all(len(n) <= 63 and n == n.lower() for n in (one, two, main))
