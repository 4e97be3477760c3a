"""Host and process-group figures for /metrics: where memory and connections go, on every layer.

Read with psutil at scrape time (nothing on the hot path). The process group is the supervised unit
(a server and its workers lead one group locally; a container's processes on Kubernetes), so its
resident memory and open TCP connections are the sum over the group's processes. Labels are a fixed
set (`mode` of CPU time, `kind` of memory): cardinality does not grow with models or clients.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_CPU_MODES = ("user", "system", "idle", "iowait", "nice", "irq", "softirq", "steal")


class HostCollector(Collector):
    """modelfleet_host_cpu_seconds_total{mode}, modelfleet_host_memory_bytes{kind},
    modelfleet_group_resident_memory_bytes, modelfleet_group_open_connections."""

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily(
            "modelfleet_host_cpu_seconds", "CPU time of the host by mode (all cores).", labels=["mode"]
        )
        times = psutil.cpu_times()
        for mode in _CPU_MODES:
            if hasattr(times, mode):
                cpu.add_metric([mode], float(getattr(times, mode)))
        yield cpu
        memory = GaugeMetricFamily(
            "modelfleet_host_memory_bytes", "Memory of the host: total and available.", labels=["kind"]
        )
        virtual = psutil.virtual_memory()
        memory.add_metric(["total"], float(virtual.total))
        memory.add_metric(["available"], float(virtual.available))
        yield memory
        rss, connections = _group_figures()
        yield GaugeMetricFamily(
            "modelfleet_group_resident_memory_bytes",
            "Resident memory of this process group (a server with its workers, or the router).",
            value=float(rss),
        )
        yield GaugeMetricFamily(
            "modelfleet_group_open_connections",
            "Established TCP connections of this process group.",
            value=float(connections),
        )


def _group_figures() -> tuple[int, int]:
    group = os.getpgid(0)
    rss = connections = 0
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) != group:
                continue
            rss += process.memory_info().rss
            connections += sum(
                1 for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED
            )
    return rss, connections
