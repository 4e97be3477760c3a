"""The per-model row store (server/model_series.py): the same exposition as prometheus_client, pools
of real processes summed from their files, a dead worker's gauges zeroed, rows reused cleanly."""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelfleet.server.metrics import MODEL_SCHEMA, ModelMetrics, mark_worker_dead
from modelfleet.server.model_series import SeriesStore, render

_REQUESTS = MODEL_SCHEMA.family("modelfleet_requests")
_REQUEST_S = MODEL_SCHEMA.family("modelfleet_request_duration_seconds")
_BATCH = MODEL_SCHEMA.family("modelfleet_batch_size")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_exposition_is_the_one_prometheus_client_writes_for_the_same_observations() -> None:
    import prometheus_client

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # as the server runs
    registry = CollectorRegistry()
    requests = Counter("modelfleet_requests", _REQUESTS.help, ["model", "outcome"], registry=registry)
    request_s = Histogram(
        "modelfleet_request_duration_seconds",
        _REQUEST_S.help,
        ["model"],
        buckets=_REQUEST_S.bounds[:-1],
        registry=registry,
    )
    queue_s, compute_s = (
        Histogram(
            name, MODEL_SCHEMA.family(name).help, ["model"], buckets=_REQUEST_S.bounds[:-1], registry=registry
        )
        for name in ("modelfleet_queue_duration_seconds", "modelfleet_compute_duration_seconds")
    )
    batch = Histogram(
        "modelfleet_batch_size", _BATCH.help, ["model"], buckets=_BATCH.bounds[:-1], registry=registry
    )
    depth = Gauge("modelfleet_queue_depth", "Items waiting for a model run.", ["model"], registry=registry)
    store = SeriesStore(MODEL_SCHEMA)
    shuffle = random.Random(7)
    names = ["plain", 'odd "quoted"\\back\nslash', "émbed-ü"]
    handles = {name: ModelMetrics(store, name) for name in names}
    for _ in range(2000):
        name = shuffle.choice(names)
        outcome = shuffle.choice(("success", "overloaded", "timeout"))
        seconds = shuffle.choice((shuffle.expovariate(100.0), 0.0005, 10.0, 12.5))  # bounds are inclusive
        items = shuffle.randint(1, 2000)
        waits_s = [shuffle.expovariate(50.0) for _ in range(shuffle.randint(0, 3))]
        requests.labels(name, outcome).inc()
        request_s.labels(name).observe(seconds)
        batch.labels(name).observe(items)
        depth.labels(name).set(items)
        compute_s.labels(name).observe(seconds / 2)
        for waited_s in waits_s:
            queue_s.labels(name).observe(waited_s)
        handles[name].count(outcome)
        handles[name].observe_request_s(seconds)
        handles[name].on_batch(items, len(waits_s), seconds / 2, waits_s)
        handles[name].on_queue_depth(items)
    ours_text, theirs_text = b"".join(store.render()).decode(), generate_latest(registry).decode()
    # Line for line: dashboards and tests match the text, not only its parse.
    assert set(theirs_text.splitlines()) - set(ours_text.splitlines()) == set()
    ours, theirs = _samples(ours_text), _samples(theirs_text)
    assert theirs and all(ours[key] == pytest.approx(value) for key, value in theirs.items())
    never = {key: value for key, value in ours.items() if key not in theirs}
    # prometheus_client writes a labelled child only once it is touched; the store writes every row.
    assert all(value == 0 for value in never.values())


def test_a_dropped_name_leaves_the_exposition_and_its_row_comes_back_zeroed() -> None:
    store = SeriesStore(MODEL_SCHEMA)
    first = ModelMetrics(store, "first")
    first.count("success", 5)
    store.drop("first")
    first.detach()
    first.count("success")  # a request that started before the drop: counted nowhere
    second = ModelMetrics(store, "second")
    text = b"".join(store.render()).decode()
    assert 'model="first"' not in text
    assert 'modelfleet_requests_total{model="second",outcome="success"} 0.0' in text
    assert second._row == 0  # the freed row, reused


def test_rows_grow_past_the_first_capacity_without_losing_figures(tmp_path: Path) -> None:
    for directory in (None, tmp_path):
        store = SeriesStore(MODEL_SCHEMA, directory=directory, pid=1)
        handles = [ModelMetrics(store, f"model-{index}") for index in range(100)]
        for index, handle in enumerate(handles):
            handle.count("success", index)
        samples = _samples(b"".join(store.render()).decode())
        for index in range(100):
            key = ("modelfleet_requests_total", (("model", f"model-{index}"), ("outcome", "success")))
            assert samples[key] == index
        store.close()


def _worker(
    index: int,
    directory: Path,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    store = SeriesStore(MODEL_SCHEMA, directory=directory)
    shared = ModelMetrics(store, "shared")
    shared.count("success", 3)
    shared.on_queue_depth(4)
    if index == 0:
        ModelMetrics(store, "only-one-worker-serves-me").count("timeout")
    ready.set()
    stop.wait(30)


def test_a_pool_sums_its_workers_files_and_a_dead_workers_queue_is_not_waiting_any_more(
    tmp_path: Path,
) -> None:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    workers = []
    for index in range(2):
        ready = context.Event()
        process = context.Process(target=_worker, args=(index, tmp_path, ready, stop))
        process.start()
        assert ready.wait(60)
        workers.append(process)
    reader = SeriesStore(MODEL_SCHEMA, directory=tmp_path)  # a third worker, serving the scrape
    samples = _samples(b"".join(reader.render()).decode())
    assert samples[("modelfleet_requests_total", (("model", "shared"), ("outcome", "success")))] == 6
    assert samples[("modelfleet_queue_depth", (("model", "shared"),))] == 8
    assert (
        samples[
            ("modelfleet_requests_total", (("model", "only-one-worker-serves-me"), ("outcome", "timeout")))
        ]
        == 1
    )
    stop.set()
    for process in workers:
        process.join(30)
    assert workers[0].pid is not None
    mark_worker_dead(workers[0].pid, tmp_path)
    samples = _samples(b"".join(reader.render()).decode())
    assert (
        samples[("modelfleet_requests_total", (("model", "shared"), ("outcome", "success")))] == 6
    )  # counted
    assert samples[("modelfleet_queue_depth", (("model", "shared"),))] == 4  # the dead worker's 4 are gone


def test_a_worker_file_being_written_or_of_another_layout_is_read_safely(tmp_path: Path) -> None:
    store = SeriesStore(MODEL_SCHEMA, directory=tmp_path, pid=1)
    ModelMetrics(store, "whole").count("success")
    names = tmp_path / "model_series_1.names"
    with names.open("ab") as log:
        log.write(b'[1, "half-writt')  # a line whose newline is not written yet
    (tmp_path / "model_series_2.names").write_text('{"schema": "other", "width": 3}\n[0, "elsewhere"]\n')
    (tmp_path / "model_series_2.f64").write_bytes(b"\0" * 24)
    text = b"".join(SeriesStore(MODEL_SCHEMA, directory=tmp_path, pid=3).render()).decode()
    assert 'model="whole",outcome="success"} 1.0' in text
    assert "half-writt" not in text and "elsewhere" not in text


def test_an_empty_store_renders_only_the_families_headers() -> None:
    text = b"".join(render(MODEL_SCHEMA, [])).decode()
    assert len(list(text_string_to_metric_families(text))) == len(MODEL_SCHEMA.families)
    assert "model=" not in text
