"""A real browser test: JupyterLab + headless Chromium run notebook 01 and scrub the slice viewer.

Needs /usr/bin/chromium (Debian/Ubuntu: ``apt-get install -y chromium``) and the playwright package;
Playwright's own browser download is never used. Run it with ``pytest -m browser tests/test_browser.py``;
set HEARTSEG_BROWSER_SCREENSHOT=/some/file.png to keep a screenshot of the page after the slider moved.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "01_explore_data.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SETTINGS = {  # plugin id -> overrides written into the isolated JupyterLab settings dir
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},  # keep every cell in the DOM
}
RUN_TIMEOUT_MS = 300_000  # notebook 01 takes about a minute on 2 CPU cores

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, token: str, method: str = "GET") -> int:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.status


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on 127.0.0.1 serving a temp copy of notebook 01; yields (base_url, token, notebook name)."""
    from heartseg_utils import data

    data.get_dataset_dir("")  # generate/reuse the default dataset now, not inside the timed browser run
    root, settings = tmp_path / "root", tmp_path / "settings"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)  # autosave writes into the copy, never into the repo
    for plugin, values in SETTINGS.items():
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    env = dict(
        os.environ,
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _api(f"{base}/api/status", token) == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start; see {tmp_path / 'jupyterlab.log'}")
            time.sleep(0.5)
        yield base, token, NOTEBOOK.name
    finally:
        try:
            _api(f"{base}/api/shutdown", token, method="POST")
            proc.wait(timeout=20)
        except Exception:  # noqa: BLE001 - whatever happened, make sure the process goes away
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def _scrubber_state(page) -> tuple[str, str]:
    """(last `redraw:` line, image src) of the slice scrubber's Output widget."""
    out = page.locator(".widget-output", has_text="redraw:").last
    line = [t for t in out.inner_text().splitlines() if t.startswith("redraw:")][-1]
    return line, out.locator("img").first.get_attribute("src") or ""


def test_slice_scrubber_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, token, name = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{name}?token={token}")
            status = page.locator("#jp-main-statusbar")
            expect(status).to_contain_text("Idle", timeout=120_000)  # kernel started
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            expect(status).to_contain_text("Busy", timeout=30_000)
            expect(status).to_contain_text("Idle", timeout=RUN_TIMEOUT_MS)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert page.locator(".jp-RenderedText", has_text="Traceback").count() == 0, errors.all_inner_texts()

            slider = page.locator(".widget-hslider", has=page.locator(".noUi-handle")).first
            slider.scroll_into_view_if_needed()
            line0, img0 = _scrubber_state(page)
            assert img0.startswith("data:image/png"), img0[:50]
            slider.locator(".noUi-handle").first.click()
            for _ in range(5):
                page.keyboard.press("ArrowRight")
            target = slider.locator(".widget-readout").inner_text().strip()  # value the slider moved to
            assert f"slice={target} " not in line0, (line0, target)
            page.wait_for_function(  # keys fire one redraw each: wait for the one of the final value
                """want => [...document.querySelectorAll('.widget-output')].some(
                       e => e.innerText.includes(want))""",
                arg=f"slice={target} ",
                timeout=30_000,
            )
            line1, img1 = _scrubber_state(page)
            shot = os.environ.get("HEARTSEG_BROWSER_SCREENSHOT") or str(tmp_path / "browser.png")
            page.screenshot(path=shot)
        finally:
            browser.close()
    assert line1 != line0 and "plane=axial" in line1, (line0, line1)
    assert img1 != img0, "the scrubber image did not change after moving the slider"
