"""The Prometheus plugin, on a real kernel with the memory driver and a virtual clock, read from a
real ``CollectorRegistry`` (``get_sample_value`` and the text exposition) and over HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tickkit import UTC, Kernel, PluginError, TaskContext, TaskRegistry, task
from tickkit.drivers.memory import MemoryDriver
from tickkit.plugins.prometheus import PrometheusPlugin, default_plugin, driver_label
from tickkit.testing import VirtualClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OUTCOMES = ("succeeded", "failed", "timed_out", "skipped", "missed", "cancelled")


def make_tasks() -> TaskRegistry:
    registry = TaskRegistry()

    async def ok(ctx: TaskContext) -> str:
        await ctx.kernel.clock.sleep(2)
        return "done"

    async def flaky(ctx: TaskContext) -> None:
        await ctx.kernel.clock.sleep(1)
        if ctx.attempt == 1:
            raise RuntimeError("boom on attempt 1")

    async def slow(ctx: TaskContext) -> None:
        await ctx.kernel.clock.sleep(10)

    async def never(ctx: TaskContext) -> None:
        raise AssertionError("prepare returned False: execute must not run")

    task(name="ok", execute=ok, registry=registry)
    task(name="flaky", execute=flaky, retries=1, backoff=5, registry=registry)
    task(name="slow", execute=slow, timeout=3, retries=1, backoff=1, registry=registry)
    task(name="skipper", execute=never, prepare=lambda ctx: False, registry=registry)
    task(name="punctual", execute=ok, misfire="skip", registry=registry)
    return registry


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def plugin(registry: CollectorRegistry) -> PrometheusPlugin:
    return PrometheusPlugin(registry, jobs_interval=10)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def kernel_for(clock: VirtualClock) -> Callable[..., Any]:
    @asynccontextmanager
    async def opener(plugin: object, **kw: Any) -> AsyncIterator[Kernel]:
        kernel = Kernel(
            kw.pop("driver", None) or MemoryDriver(keep_completed=True),
            tasks=make_tasks(),
            clock=clock,
            plugins=[plugin],
            **kw,
        )
        async with kernel:
            yield kernel

    return opener


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_success(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(plugin) as k:
        # every task's run counters exist, at zero, from the start
        for outcome in OUTCOMES:
            assert sample(registry, "tickkit_runs_total", task="ok", outcome=outcome) == 0.0
        await k.create_task("ok", None, T0 + timedelta(seconds=10))
        await clock.jump(25)  # suspended: the run starts 15 s late
        await clock.advance(2)
    assert sample(registry, "tickkit_runs_total", task="ok", outcome="succeeded") == 1.0
    assert sample(registry, "tickkit_runs_total", task="ok", outcome="failed") == 0.0
    labels = {"task": "ok", "outcome": "succeeded"}
    assert sample(registry, "tickkit_run_duration_seconds_count", **labels) == 1.0
    assert sample(registry, "tickkit_run_duration_seconds_sum", **labels) == 2.0
    assert sample(registry, "tickkit_run_duration_seconds_bucket", le="1.0", **labels) == 0.0
    assert sample(registry, "tickkit_run_duration_seconds_bucket", le="2.5", **labels) == 1.0
    assert sample(registry, "tickkit_run_lateness_seconds_count", task="ok") == 1.0
    assert sample(registry, "tickkit_run_lateness_seconds_sum", task="ok") == 15.0
    assert sample(registry, "tickkit_run_lateness_seconds_bucket", task="ok", le="10.0") == 0.0
    assert sample(registry, "tickkit_run_lateness_seconds_bucket", task="ok", le="30.0") == 1.0
    # created at 0 when the kernel started: a first retry is an increase from 0
    assert sample(registry, "tickkit_retries_total", task="ok") == 0.0


async def test_failure_then_retry(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(plugin) as k:
        job_id = await k.create_task("flaky")
        await clock.advance(1)
        assert sample(registry, "tickkit_runs_total", task="flaky", outcome="failed") == 1.0
        assert sample(registry, "tickkit_runs_total", task="flaky", outcome="succeeded") == 0.0
        assert sample(registry, "tickkit_retries_total", task="flaky") == 1.0
        await clock.advance(6)
        job = await k.get_task(job_id)
        assert job is not None and job.runs == 2
    assert sample(registry, "tickkit_runs_total", task="flaky", outcome="failed") == 1.0
    assert sample(registry, "tickkit_runs_total", task="flaky", outcome="succeeded") == 1.0
    assert sample(registry, "tickkit_retries_total", task="flaky") == 1.0
    failed = {"task": "flaky", "outcome": "failed"}
    assert sample(registry, "tickkit_run_duration_seconds_sum", **failed) == 1.0
    # lateness: first attempts only (the retry's start is set by the backoff)
    assert sample(registry, "tickkit_run_lateness_seconds_count", task="flaky") == 1.0
    assert sample(registry, "tickkit_run_lateness_seconds_sum", task="flaky") == 0.0


async def test_skip(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(plugin) as k:
        await k.create_task("skipper")
        await clock.advance(1)
    assert sample(registry, "tickkit_runs_total", task="skipper", outcome="skipped") == 1.0
    assert sample(registry, "tickkit_runs_total", task="skipper", outcome="succeeded") == 0.0
    skipped = {"task": "skipper", "outcome": "skipped"}
    assert sample(registry, "tickkit_run_duration_seconds_count", **skipped) == 1.0
    assert sample(registry, "tickkit_run_lateness_seconds_count", task="skipper") == 1.0


async def test_missed(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(plugin) as k:
        await k.create_task("punctual", None, T0 + timedelta(seconds=10))
        await k.create_task("punctual", None, T0 + timedelta(seconds=20))
        await clock.jump(60)  # both far past the 1 s grace of misfire="skip"
    assert sample(registry, "tickkit_runs_total", task="punctual", outcome="missed") == 2.0
    assert sample(registry, "tickkit_runs_total", task="punctual", outcome="succeeded") == 0.0
    missed = {"task": "punctual", "outcome": "missed"}
    assert sample(registry, "tickkit_run_duration_seconds_count", **missed) is None
    assert sample(registry, "tickkit_run_lateness_seconds_count", task="punctual") is None


async def test_timeout_with_retry(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(plugin) as k:
        await k.create_task("slow")
        await clock.advance(3)  # attempt 1 times out, retried 1 s later
        await clock.advance(4)  # attempt 2 times out, none left
    assert sample(registry, "tickkit_runs_total", task="slow", outcome="timed_out") == 2.0
    assert sample(registry, "tickkit_runs_total", task="slow", outcome="failed") == 0.0
    assert sample(registry, "tickkit_retries_total", task="slow") == 1.0
    timed_out = {"task": "slow", "outcome": "timed_out"}
    assert sample(registry, "tickkit_run_duration_seconds_count", **timed_out) == 2.0
    assert sample(registry, "tickkit_run_duration_seconds_sum", **timed_out) == 6.0


async def test_cancelled_by_shutdown(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(plugin, shutdown_timeout=0) as k:
        await k.create_task("ok")
        await clock.advance(1)
    assert sample(registry, "tickkit_runs_total", task="ok", outcome="cancelled") == 1.0
    assert sample(registry, "tickkit_runs_total", task="ok", outcome="succeeded") == 0.0
    cancelled = {"task": "ok", "outcome": "cancelled"}
    assert sample(registry, "tickkit_run_duration_seconds_sum", **cancelled) == 1.0


async def test_jobs_by_state_refreshed_on_the_kernel_clock(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    def jobs(state: str) -> float | None:
        return sample(registry, "tickkit_jobs", driver="memory", state=state)

    async with kernel_for(plugin) as k:
        await clock.advance(0)
        assert jobs("scheduled") == 0.0  # the first refresh runs at start
        a = await k.create_task("ok", None, T0 + timedelta(hours=1))
        await k.create_task("ok", None, T0 + timedelta(hours=2))
        await k.create_task("ok", None, T0 + timedelta(hours=3))
        await k.pause_task(a)
        await k.create_task("slow")
        await clock.advance(1)  # "slow" is running; the gauge waits for the next refresh
        assert jobs("scheduled") == 0.0
        await clock.advance(9)  # 10 s: jobs_interval
        assert jobs("scheduled") == 2.0
        assert jobs("paused") == 1.0
        assert jobs("running") == 0.0  # "slow" timed out at 3 s and failed for good
        assert jobs("failed") == 1.0
        assert jobs("completed") == 0.0
        assert jobs("missed") == 0.0
    # a stopped kernel's counts are dropped, not left stale
    assert jobs("scheduled") is None


async def test_jobs_driver_label_setting(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(plugin, settings={"metrics_driver_label": "reminders"}) as k:
        await k.create_task("ok", None, T0 + timedelta(hours=1))
        await clock.advance(10)
        labels = {"driver": "reminders", "state": "scheduled"}
        assert sample(registry, "tickkit_jobs", **labels) == 1.0
    assert driver_label(MemoryDriver()) == "memory"


async def test_exposition_names_types_and_help(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    async with kernel_for(plugin) as k:
        await k.create_task("ok")
        await clock.advance(10)  # the run ends at 2 s; the job counts are read again at 10 s
        text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # (prometheus_client also exposes each counter's and histogram's *_created time)
    assert {n: f.type for n, f in families.items() if not n.endswith("_created")} == {
        "tickkit_runs": "counter",
        "tickkit_retries": "counter",
        "tickkit_run_duration_seconds": "histogram",
        "tickkit_run_lateness_seconds": "histogram",
        "tickkit_jobs": "gauge",
    }
    assert "# HELP tickkit_runs_total Finished runs by task and outcome" in text
    assert 'tickkit_runs_total{outcome="succeeded",task="ok"} 1.0' in text
    assert 'tickkit_run_duration_seconds_bucket{le="+Inf",outcome="succeeded",task="ok"} 1.0' in (
        text
    )
    assert 'tickkit_jobs{driver="memory",state="completed"} 1.0' in text
    assert 'tickkit_jobs{driver="memory",state="scheduled"} 0.0' in text


async def test_serves_metrics_over_http(clock: VirtualClock) -> None:
    """``tickkit run --metrics-port N`` builds this kernel: the module-level plugin (default
    REGISTRY) and ``settings["metrics_port"]``. Port 0 takes a free port; a real scrape over a
    socket reads it."""
    plugin = default_plugin()
    before = REGISTRY.get_sample_value("tickkit_runs_total", {"task": "ok", "outcome": "succeeded"})
    kernel = Kernel(
        MemoryDriver(),
        tasks=make_tasks(),
        clock=clock,
        plugins=["tickkit.plugins.prometheus"],
        settings={"metrics_port": 0, "metrics_addr": "127.0.0.1", "metrics_jobs_interval": 10},
    )
    async with kernel:
        await kernel.create_task("ok")
        await kernel.create_task("ok", None, T0 + timedelta(hours=1))
        await clock.advance(10)  # one run ends at 2 s; the job counts are read again at 10 s
        with anyio.fail_after(10):  # the server binds in a worker thread: wait for it, bounded
            while plugin.server_address(kernel) is None:  # noqa: ASYNC110 - set by a thread
                await anyio.sleep(0.01)
        address = plugin.server_address(kernel)
        assert address is not None
        host, port = address
        url = f"http://{host}:{port}/metrics"

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                body: bytes = response.read()
                return body.decode()

        text = await anyio.to_thread.run_sync(scrape)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    runs = {
        (s.labels["task"], s.labels["outcome"]): s.value
        for s in families["tickkit_runs"].samples
        if s.name == "tickkit_runs_total"
    }
    assert runs[("ok", "succeeded")] == (before or 0.0) + 1
    jobs = {
        s.labels["state"]: s.value
        for s in families["tickkit_jobs"].samples
        if s.labels["driver"] == "memory"
    }
    assert jobs == {
        "scheduled": 1.0,
        "running": 0.0,
        "paused": 0.0,
        "completed": 0.0,
        "failed": 0.0,
        "missed": 0.0,
    }
    assert "tickkit_run_lateness_seconds" in families
    # the server stopped with the kernel
    assert plugin.server_address(kernel) is None
    with pytest.raises(urllib.error.URLError):
        await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=10))


async def test_port_in_use_is_reported_and_the_kernel_keeps_running(
    registry: CollectorRegistry,
    plugin: PrometheusPlugin,
    clock: VirtualClock,
    kernel_for: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with kernel_for(
            plugin, settings={"metrics_port": port, "metrics_addr": "127.0.0.1"}
        ) as k:
            with anyio.fail_after(10):  # binding fails in a worker thread: wait for the log
                while f"127.0.0.1:{port}" not in caplog.text:  # noqa: ASYNC110 - a log line
                    await anyio.sleep(0.01)
            await k.create_task("ok")
            await clock.advance(2)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in caplog.text
    assert sample(registry, "tickkit_runs_total", task="ok", outcome="succeeded") == 1.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"metrics_port": "9464"}, "'9464'"),
        ({"metrics_port": 70000}, "70000"),
        ({"metrics_port": True}, "True"),
        ({"metrics_addr": ""}, "''"),
        ({"metrics_addr": "bad host"}, "'bad host'"),
        ({"metrics_jobs_interval": 0}, "metrics_jobs_interval .* got 0"),
        ({"metrics_driver_label": 3}, "got 3"),
    ],
)
async def test_bad_settings_fail_the_start(
    plugin: PrometheusPlugin, clock: VirtualClock, settings: dict[str, Any], message: str
) -> None:
    kernel = Kernel(
        MemoryDriver(), tasks=make_tasks(), clock=clock, plugins=[plugin], settings=settings
    )
    with pytest.raises(PluginError, match=message):
        await kernel.start()
    assert kernel.state == "stopped"  # a failed start closes what it opened (issue 11)
    await kernel.stop()


def test_one_plugin_per_registry(registry: CollectorRegistry) -> None:
    first = PrometheusPlugin(registry)
    with pytest.raises(PluginError, match="already registered"):
        PrometheusPlugin(registry)
    # the failed second plugin left the first one's metrics in place
    first.runs.labels("t", "succeeded").inc()
    assert sample(registry, "tickkit_runs_total", task="t", outcome="succeeded") == 1.0


def test_bad_options_name_the_value(registry: CollectorRegistry) -> None:
    with pytest.raises(PluginError, match="'not a registry'"):
        PrometheusPlugin("not a registry")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match=r"jobs_interval .* got -1"):
        PrometheusPlugin(registry, jobs_interval=-1)
    with pytest.raises(PluginError, match="tickkit_run_duration_seconds"):
        PrometheusPlugin(registry, duration_buckets=(5, 1))
    # nothing was left registered by the refused plugins
    PrometheusPlugin(registry)


def test_module_is_a_plugin_on_the_default_registry() -> None:
    import tickkit.plugins.prometheus as module

    assert default_plugin() is default_plugin()
    assert default_plugin().registry is REGISTRY
    hooks = {n for n in dir(module) if n.startswith("tickkit_")}
    assert hooks == {
        "tickkit_wrap_run",
        "tickkit_run_started",
        "tickkit_run_failed",
        "tickkit_run_timed_out",
        "tickkit_run_missed",
        "tickkit_run_finished",
        "tickkit_load_tasks",
        "tickkit_kernel_started",
        "tickkit_kernel_services",
    }


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the SQLite driver runs on asyncio
async def test_jobs_by_state_on_a_sqlite_store(
    registry: CollectorRegistry,
    plugin: PrometheusPlugin,
    clock: VirtualClock,
    kernel_for: Any,
    tmp_path: Path,
) -> None:
    """``tickkit_jobs`` reads ``Driver.count_jobs()`` of a real store; the label names it."""
    from tickkit.drivers.sqlite import SQLiteDriver

    driver = SQLiteDriver(tmp_path / "jobs.db", keep_failed=True)

    def jobs(state: str) -> float | None:
        return sample(registry, "tickkit_jobs", driver="sqlite", state=state)

    async with kernel_for(plugin, driver=driver) as k:
        for hours in (1, 2):
            await k.create_task("ok", None, T0 + timedelta(hours=hours))
        paused = await k.create_task("ok", None, T0 + timedelta(hours=3))
        await k.pause_task(paused)
        await k.create_task("slow")  # times out at 3 s, retried at 4 s, times out for good at 7 s
        await clock.advance(10)
        assert jobs("scheduled") == 2.0
        assert jobs("paused") == 1.0
        assert jobs("failed") == 1.0
        assert jobs("running") == 0.0
    assert sample(registry, "tickkit_runs_total", task="slow", outcome="timed_out") == 2.0
    assert jobs("scheduled") is None


# --- the metrics server's address ------------------------------------------------------------


async def _wait_for_server(plugin: PrometheusPlugin, kernel: Kernel) -> tuple[str, int]:
    with anyio.fail_after(10):  # the server binds in a worker thread: wait for it, bounded
        while plugin.server_address(kernel) is None:  # noqa: ASYNC110 - set by a thread
            await anyio.sleep(0.01)
    address = plugin.server_address(kernel)
    assert address is not None
    return address


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


def _connects(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


async def test_counters_exist_at_zero_on_the_first_scrape(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    """Scraped over HTTP before any run: every task's run counter (each outcome) and retry
    counter is there at 0, so Prometheus' increase() sees the first retry."""
    async with kernel_for(plugin, settings={"metrics_port": 0}) as k:
        host, port = await _wait_for_server(plugin, k)
        text = await anyio.to_thread.run_sync(_get, f"http://{host}:{port}/metrics")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        retries = {
            s.labels["task"]: s.value
            for s in families["tickkit_retries"].samples
            if s.name == "tickkit_retries_total"
        }
        runs = {
            (s.labels["task"], s.labels["outcome"]): s.value
            for s in families["tickkit_runs"].samples
            if s.name == "tickkit_runs_total"
        }
        names = set(k.tasks.names())
        assert retries == dict.fromkeys(names, 0.0)
        assert runs == {(name, outcome): 0.0 for name in names for outcome in OUTCOMES}


async def test_a_task_added_later_gets_its_counters_at_zero(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    """A task added while the kernel runs (what reload does) gets its series at 0 at the next
    refresh of the job counts (``metrics_jobs_interval``), before it ever runs."""

    async def later(ctx: TaskContext) -> None:
        return None

    extra = TaskRegistry()
    definition = task(name="later", execute=later, retries=1, registry=extra)
    async with kernel_for(plugin) as k:
        k.tasks.add(definition)
        assert sample(registry, "tickkit_retries_total", task="later") is None
        await clock.advance(10)
        assert sample(registry, "tickkit_retries_total", task="later") == 0.0
        for outcome in OUTCOMES:
            assert sample(registry, "tickkit_runs_total", task="later", outcome=outcome) == 0.0


async def test_serves_on_loopback_only_by_default(
    plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    """Without metrics_addr the server binds 127.0.0.1: a connection to another address of this
    machine (127.0.0.2, which a 0.0.0.0 bind answers on Linux) is refused."""
    import sys

    async with kernel_for(plugin, settings={"metrics_port": 0}) as k:
        host, port = await _wait_for_server(plugin, k)
        assert host == "127.0.0.1"
        assert await anyio.to_thread.run_sync(_connects, "127.0.0.1", port)
        if sys.platform.startswith("linux"):
            assert not await anyio.to_thread.run_sync(_connects, "127.0.0.2", port)


async def test_metrics_addr_every_interface(
    plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    """``metrics_addr="0.0.0.0"`` is the way to serve every interface (then 127.0.0.2 answers
    too, which proves the test above tells the two binds apart)."""
    import sys

    async with kernel_for(plugin, settings={"metrics_port": 0, "metrics_addr": "0.0.0.0"}) as k:
        host, port = await _wait_for_server(plugin, k)
        assert host == "0.0.0.0"
        assert await anyio.to_thread.run_sync(_connects, "127.0.0.1", port)
        if sys.platform.startswith("linux"):
            assert await anyio.to_thread.run_sync(_connects, "127.0.0.2", port)


def _ipv6_loopback() -> bool:
    import socket

    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("written", ["::1", "[::1]"])
async def test_metrics_addr_ipv6(
    plugin: PrometheusPlugin,
    clock: VirtualClock,
    kernel_for: Any,
    written: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback (::1)")
    caplog.set_level("INFO", logger="tickkit.plugins.prometheus")
    async with kernel_for(plugin, settings={"metrics_port": 0, "metrics_addr": written}) as k:
        host, port = await _wait_for_server(plugin, k)
        assert host == "::1"
        text = await anyio.to_thread.run_sync(_get, f"http://[::1]:{port}/metrics")
        assert "tickkit_runs_total" in text
        assert not await anyio.to_thread.run_sync(_connects, "127.0.0.1", port)
    # the logged URL is one a browser can open
    assert f"serving metrics on http://[::1]:{port}/metrics" in caplog.text


async def test_driver_label_never_carries_a_password(
    registry: CollectorRegistry, plugin: PrometheusPlugin, clock: VirtualClock, kernel_for: Any
) -> None:
    label = "redis://:S3cretPW@db.internal:6379/0"
    masked = {"driver": "redis://:***@db.internal:6379/0", "state": "scheduled"}
    async with kernel_for(plugin, settings={"metrics_driver_label": label}):
        with anyio.fail_after(10):  # the first count of the jobs, at start
            while registry.get_sample_value("tickkit_jobs", masked) is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        page = generate_latest(registry).decode()
    assert "S3cretPW" not in page
