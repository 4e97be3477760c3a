"""The live dashboard of a real local fleet (auth on) in a real headless Chromium driven by Selenium, and
the fleet's Grafana dashboard checked against a JSON schema and against the metrics the fleet exports.

One fleet (two models in one server process, and the router) and one browser for the whole module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.fleet_specs import write_fleet_spec
from tests.support.grafana import GRAFANA_DASHBOARD_SCHEMA, PROMETHEUS_SERIES, metric_names
from tests.support.linear_model import infer_body, make_artifact

from modelfleet.fleet.local import start_fleet, stop_fleet
from modelfleet.fleet.state import FleetPaths, FleetState
from modelfleet.operate.dashboard import grafana_dashboard
from modelfleet.security.keys import KeyStore

pytestmark = pytest.mark.timeout(120)

CHROMIUM = os.environ.get("MODELFLEET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MODELFLEET_CHROMEDRIVER", "/usr/bin/chromedriver")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install modelfleet[test])"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} is missing: apt-get install {package} (or set MODELFLEET_CHROMIUM/_CHROMEDRIVER)"
    return None


@dataclass
class Fleet:
    state: FleetState
    spec_file: Path
    state_root: Path
    read_key: str
    infer_key: str

    @property
    def url(self) -> str:
        return self.state.router_url


def _start_browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-extensions", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    return driver


@pytest.fixture(scope="module")
def starting_browser() -> Iterator[Future[Any] | None]:
    """Chromium starting in a thread while the fleet starts (each takes seconds); None without one."""
    if _browser_missing() is not None:
        yield None
        return
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(_start_browser)
        try:
            yield future
        finally:
            with contextlib.suppress(Exception):
                future.result(timeout=60).quit()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, starting_browser: Future[Any] | None) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("ui-fleet")
    keys_file = root / "keys.json"
    read_key = KeyStore(keys_file).create("ui-read", ["read"], actor="test").key
    infer_key = KeyStore(keys_file).create("ui-infer", ["infer:alpha", "infer:beta"], actor="test").key
    reports = root / "reports"
    reports.mkdir()
    (reports / "bench-old.html").write_text("<html><body>old</body></html>")
    os.utime(reports / "bench-old.html", (1, 1))
    (reports / "bench-latest.html").write_text("<html><body>latest bench</body></html>")
    (reports / "tune.html").write_text("<html><body>tune page</body></html>")
    models = [
        {"name": "alpha", "path": str(make_artifact(root / "alpha", "alpha", 1)), "warmup_runs": 1,
         "slo": {"latency_ms": 250, "percentile": 99, "error_rate_percent": 0.5}},
        {"name": "beta", "path": str(make_artifact(root / "beta", "beta", 2)), "warmup_runs": 1},
    ]  # fmt: skip
    spec_file = write_fleet_spec(
        root / "fleet.yaml",
        {},
        models=models,
        auth={"enabled": True, "keys_file": str(keys_file)},
        ui={"refresh_s": 0.3, "reports_dir": str(reports)},
    )
    state_root = root / "state"
    state = start_fleet(spec_file, state_root=state_root, wait_s=90)
    try:
        yield Fleet(state, spec_file, state_root, read_key, infer_key)
    finally:
        stop_fleet(spec_file, state_root, grace_s=5)


@pytest.fixture(scope="module")
def browser(starting_browser: Future[Any] | None) -> Any:
    missing = _browser_missing()
    if starting_browser is None or missing is not None:
        pytest.skip(missing or "no browser")
    return starting_browser.result(timeout=60)


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the page is being re-rendered: an element went stale mid-read
            last = exc
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"{what} not seen within {timeout_s} s (last: {last!r})")


# The page replaces its tables at every poll, so an element found by Selenium can go stale before it is
# read: every read is one script in the page, which runs between two renders.
_READ = "return Array.from(document.querySelectorAll(arguments[0]), node => [node.textContent, node.getAttribute(arguments[1] || 'id')]);"


def _read(browser: Any, selector: str, attribute: str = "") -> list[tuple[str, str | None]]:
    return [(text, value) for text, value in browser.execute_script(_READ, selector, attribute)]


def _text(browser: Any, selector: str) -> str:
    found = _read(browser, selector)
    return found[0][0] if found else ""


def _cell(browser: Any, table: str, key: str, name: str, column: str) -> str:
    return _text(browser, f'#{table} tr[data-{key}="{name}"] td.{column}')


def _console_errors(browser: Any) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def _check_screenshot(browser: Any, path: Path) -> None:
    assert browser.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == _PNG_MAGIC and len(data) > 10_000, f"screenshot of {len(data)} bytes"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width >= 800 and height >= 600, (width, height)


def _load(fleet: Fleet, stop: threading.Event) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {fleet.infer_key}"}, timeout=5) as client:
        while not stop.is_set():
            for model in ("alpha", "beta"):
                client.post(f"{fleet.url}/v2/models/{model}/infer", json=infer_body())


def test_the_dashboard_refuses_without_a_key_and_then_shows_every_model_live(
    fleet: Fleet, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    # Over plain HTTP first: the page and its data need the read scope, like /fleet/status.
    anonymous = httpx.get(f"{fleet.url}/ui/data")
    assert anonymous.status_code == 401 and "API key" in anonymous.json()["error"]
    assert httpx.get(f"{fleet.url}/ui").status_code == 401
    infer_only = httpx.get(f"{fleet.url}/ui/data", headers={"X-API-Key": fleet.infer_key})
    assert infer_only.status_code == 403
    assert httpx.get(f"{fleet.url}/ui/data", headers={"X-API-Key": fleet.read_key}).status_code == 200

    browser.get(f"{fleet.url}/ui")
    _wait("the key form", lambda: [value for _, value in _read(browser, "#auth", "class")] == ["shown"])
    assert _read(browser, "#models tbody tr") == []  # nothing shown without a key
    assert "API key" in _text(browser, "#auth-why")
    refused = _console_errors(browser)
    assert refused and all("401" in message for message in refused), refused  # the refusals, only
    _check_screenshot(browser, tmp_path / "refused.png")

    browser.find_element(By.ID, "key").send_keys(fleet.read_key)
    browser.find_element(By.ID, "save").click()
    _wait("both models", lambda: len(_read(browser, "#models tbody tr")) == 2)
    assert _cell(browser, "models", "model", "alpha", "ready") == "1/1"
    assert _cell(browser, "models", "model", "beta", "ready") == "1/1"
    assert _cell(browser, "models", "model", "alpha", "slo") == "p99 ≤ 250 ms, errors ≤ 0.5%"
    assert _text(browser, "#title") == "fleet testfleet"
    processes = {value for _, value in _read(browser, "#processes tbody tr", "data-process")}
    assert processes == {"cpu-0-0", "router"}
    assert _cell(browser, "processes", "process", "cpu-0-0", "memory").endswith("MiB")
    links = {text: f"{fleet.url}{href}" for text, href in _read(browser, "#reports a", "href")}
    assert set(links) == {"bench: bench-latest.html", "tune: tune.html"}, links
    report = httpx.get(links["bench: bench-latest.html"], cookies={"modelfleet_key": fleet.read_key})
    assert report.status_code == 200 and "latest bench" in report.text
    assert (
        httpx.get(f"{fleet.url}/ui/reports/bench-old.html", headers={"X-API-Key": fleet.read_key}).status_code
        == 404
    )

    stop = threading.Event()
    load = threading.Thread(target=_load, args=(fleet, stop), daemon=True)
    load.start()
    try:
        _wait(
            "alpha's requests/s under load",
            lambda: float(_cell(browser, "models", "model", "alpha", "rps").replace("—", "0")) > 0,
        )
        first = int(_cell(browser, "models", "model", "beta", "requests"))
        _wait(
            "beta's request count rising",
            lambda: int(_cell(browser, "models", "model", "beta", "requests")) > first,
        )
        _wait("a queue wait for alpha", lambda: _cell(browser, "models", "model", "alpha", "queue") != "—")
        assert float(_cell(browser, "models", "model", "alpha", "p99")) > 0
        assert _read(browser, "#spark polyline", "points")[0][1]
    finally:
        stop.set()
        load.join(10)
    assert _cell(browser, "models", "model", "alpha", "errors") == "0.00%"
    _check_screenshot(browser, tmp_path / "live.png")
    assert _console_errors(browser) == []

    # The server behind the router serves its own one-server page, with the same code as a lone server.
    server = fleet.state.process("cpu-0-0")
    browser.get(f"{server.url}/ui")  # the key cookie is per host, so the page is let in at once
    _wait("the server's models", lambda: len(_read(browser, "#models tbody tr")) == 2)
    assert _text(browser, "#title") == f"server 127.0.0.1:{server.port}"
    assert int(_cell(browser, "models", "model", "alpha", "requests")) > 0
    assert _console_errors(browser) == []


# Grafana ----------------------------------------------------------------------------------------------


def _exported(url: str, key: str) -> set[str]:
    response = httpx.get(f"{url}/metrics", headers={"X-API-Key": key}, timeout=10)
    response.raise_for_status()
    return {
        sample.name for family in text_string_to_metric_families(response.text) for sample in family.samples
    }


def test_the_grafana_dashboard_is_valid_and_queries_only_metrics_the_fleet_exports(fleet: Fleet) -> None:
    from modelfleet.fleet.sizing import load_fleet_spec

    dashboard = grafana_dashboard(load_fleet_spec(fleet.spec_file))
    jsonschema.validate(dashboard, GRAFANA_DASHBOARD_SCHEMA, cls=jsonschema.Draft202012Validator)
    saved = json.loads(FleetPaths.for_fleet("testfleet", fleet.state_root).dashboard_file.read_text())
    assert saved == json.loads(json.dumps(dashboard))  # what `fleet up` wrote is the same dashboard
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # One request per model first, so every per-model series exists in the expositions.
    for model in ("alpha", "beta"):
        httpx.post(
            f"{fleet.url}/v2/models/{model}/infer",
            json=infer_body(),
            headers={"X-API-Key": fleet.infer_key},
            timeout=10,
        ).raise_for_status()
    server = fleet.state.process("cpu-0-0")
    exported = _exported(fleet.url, fleet.read_key) | _exported(server.url, fleet.read_key)
    queried = [
        (panel["title"], name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    ]
    queried += [
        (a["name"], name) for a in dashboard["annotations"]["list"] for name in metric_names(a["expr"])
    ]
    assert len(queried) >= 15
    missing = [
        (title, name) for title, name in queried if name not in exported and name not in PROMETHEUS_SERIES
    ]
    assert missing == [], f"queries name metrics no fleet process exports: {missing}"


def test_a_killed_replica_shows_as_a_restart_in_the_page(fleet: Fleet, browser: Any, tmp_path: Path) -> None:
    browser.get(f"{fleet.url}/ui")
    _wait("the process list", lambda: _cell(browser, "processes", "process", "cpu-0-0", "restarts") == "0")
    victim = FleetPaths.for_fleet("testfleet", fleet.state_root)
    pid = json.loads(victim.state_file.read_text())["processes"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait("the restart", lambda: _cell(browser, "processes", "process", "cpu-0-0", "restarts") == "1", 30)
    _wait("the model's restart", lambda: _cell(browser, "models", "model", "alpha", "restarts") == "1")
    _wait(
        "the restart event",
        lambda: _read(browser, '#events li[data-kind="replica_restarted"]'),
    )
    assert _cell(browser, "processes", "process", "cpu-0-0", "pid") != str(pid)
    _check_screenshot(browser, tmp_path / "restarted.png")
    # The page kept polling through the restart; the router answered every poll itself.
    assert _console_errors(browser) == []
