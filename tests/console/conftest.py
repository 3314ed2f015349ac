"""A real `tlrec serve` with the web console on the session's demo world, and a headless Chromium to drive it.

The server runs the demo world's artifacts (``world``: real encoders, NCF over content
vectors, popularity), with its catalog (titles, drawn images, synthesised audio), an A/B
experiment (popularity as control, NCF as treatment, every user in it) and a reports folder
(a transfer report and an encoder comparison written by the project's own report writers).

The browser is the system Chromium with its chromedriver (Debian: ``apt-get install
chromium chromium-driver``; ``make test`` installs them as root), driven by Selenium.
Where either is missing the browser tests are skipped with a message saying so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
USER_KEY, ADMIN_KEY = "console-user-key", "console-admin-key"
EXPERIMENT = "console-ab"
#: Screenshots and browser logs; `build/` is ignored by git (TLREC_TEST_OUTPUT overrides).
OUTPUT = Path(os.environ.get("TLREC_TEST_OUTPUT", REPO / "build" / "test-output")) / "console"
CHROMIUM = os.environ.get("TLREC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("TLREC_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
ENABLE_HINT = ("as root: `apt-get install chromium chromium-driver` (`make test` does it), and "
               "`pip install -e .[test]` for selenium; TLREC_CHROMIUM / TLREC_CHROMEDRIVER name other binaries")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ConsoleServer:
    """A running ``tlrec serve`` (subprocess) and what it serves."""

    base: str
    proc: subprocess.Popen
    log: Path
    catalog: Path
    experiment_file: Path
    events_dir: Path

    def client(self, key: str | None = USER_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers={"X-API-Key": key} if key else {}, timeout=30)


def _tlrec() -> list[str]:
    """The installed `tlrec` command (beside this interpreter), or the module when it is not installed."""
    script = Path(sys.executable).with_name("tlrec")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tlrec.services.cli"]


def _write_reports(folder: Path) -> None:
    """A transfer report and an encoder comparison in the files their commands write (same writers)."""
    from tlrec.files import write_json_atomic
    from tlrec.services.encoders import CompareReport, EncoderResult, write_report
    from tlrec.training.transfer import Gain, TransferReport, plot_gains, render_markdown

    transfer = TransferReport(["text", "image"])
    for variant, diffs in {"all": (0.031, 0.002, 0.12), "all - text": (0.011, -0.004, 0.05)}.items():
        for (group, metric), diff in zip(transfer.groups.items(), diffs):
            transfer.gains.append(Gain(variant, "none", group, metric, diff, diff - 0.01, diff + 0.01, diff / 0.2))
    (folder / "transfer").mkdir(parents=True)
    (folder / "transfer" / "transfer.md").write_text(render_markdown(transfer))
    write_json_atomic(folder / "transfer" / "transfer.json", transfer.to_dict())
    plot_gains(transfer, folder / "transfer" / "transfer_gains.png")

    def result(name: str, modality: str, dim: int, recall: float) -> EncoderResult:
        return EncoderResult(name, modality, dim, 1000, 1.0, "pytorch", ".safetensors", name, 100, 0, 1.0, 0.1, 1.0,
                             250.0, recall, recall / 2)

    encoders = CompareReport("catalog.parquet", "train.parquet", 20, 0, 0.2, 480, 2000, 96, 150, 3, 0.04,
                             [result("minilm", "text", 384, 0.31), result("efficientnet-lite0", "image", 1280, 0.22)])
    write_report(encoders, folder / "encoders")


def _start(world, root: Path) -> ConsoleServer:
    events = root / "events"
    experiment = root / f"{EXPERIMENT}.yaml"
    experiment.write_text(
        f"name: {EXPERIMENT}\nsalt: console\ntraffic: 1.0\ndescription: popularity (control) against NCF over "
        f"content vectors\nvariants:\n  - {{name: control, artifact: {world.popularity_version.name}, weight: 0.5}}\n"
        f"  - {{name: treatment, artifact: {world.ncf_version.name}, weight: 0.5}}\n")
    _write_reports(root / "reports")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TLREC_API_KEYS": USER_KEY, "TLREC_ADMIN_KEY": ADMIN_KEY,
           "TLREC_EVENTS_DIR": str(events), "TLREC_THREADS": "1", "TLREC_REPORTS_DIR": str(root / "reports")}
    log = root / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*_tlrec(), "serve", "--artifacts", str(world.artifacts), "--catalog", str(world.catalog),
             "--experiment", str(experiment), "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
            cwd=REPO, env=env, stdout=out, stderr=out)
    server = ConsoleServer(f"http://127.0.0.1:{port}", proc, log, world.catalog, experiment, events)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tlrec serve exited ({proc.returncode}): {log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"tlrec serve not ready in 120 s: {log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="session")
def console(world, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """`tlrec serve --catalog --experiment` on the demo world, with keys and a reports folder."""
    server = _start(world, tmp_path_factory.mktemp("console"))
    try:
        yield server
    finally:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()


@pytest.fixture(scope="session")
def console_keys() -> dict[str, str]:
    return {"user": USER_KEY, "admin": ADMIN_KEY}


@pytest.fixture(scope="session")
def treatment_user(world, console) -> str:
    """A user the experiment answers with NCF (the treatment), so their lists carry explanations."""
    import polars as pl

    from tlrec.serving.experiments import assign_variant, load_experiment

    experiment = load_experiment(console.experiment_file)
    users = pl.read_parquet(world.train)["user_id"].unique().sort().to_list()
    return next(u for u in users if assign_variant(u, experiment) == "treatment")


@pytest.fixture(scope="session")
def control_user(world, console) -> str:
    """A user the experiment answers with popularity (the control)."""
    import polars as pl

    from tlrec.serving.experiments import assign_variant, load_experiment

    experiment = load_experiment(console.experiment_file)
    users = pl.read_parquet(world.train)["user_id"].unique().sort().to_list()
    return next(u for u in users if assign_variant(u, experiment) == "control")


# ---------------------------------------------------------------------------- the browser
def browser_missing() -> str | None:
    """Why no browser test can run here (None: Chromium, chromedriver and selenium are all there)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed; to run the browser tests: {ENABLE_HINT}"
    for name, path in (("Chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"no {name} at {path}; to run the browser tests: {ENABLE_HINT}"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """A headless Chromium (Selenium, system chromedriver), fresh profile; skipped with a message without one."""
    reason = browser_missing()
    if reason is not None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    OUTPUT.mkdir(parents=True, exist_ok=True)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(OUTPUT / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT
