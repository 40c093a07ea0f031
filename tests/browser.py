"""A real headless Chromium for page tests (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

No browser is downloaded: the system binaries are used, or the tests skip saying what is missing. The
browser reaches nothing but loopback: every host name fails to resolve except 127.0.0.1 and any other
address goes to a dead proxy, so a page that needs a CDN shows it (``requested_urls`` lists what it asked).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Screenshots land here (gitignored), one folder per test module.
OUTPUT = ROOT / "test-output"


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_or_skip() -> Any:
    """A headless Chromium WebDriver limited to loopback, or ``pytest.skip`` with the reason."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    chromium = _binary("chromium", "chromium-browser", "google-chrome")
    driver_path = _binary("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("no headless browser here: install Debian's chromium and chromium-driver (.ci/run does)")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--lang=zh-CN",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def browser_session() -> Iterator[Any]:
    """Body of each module's ``browser`` fixture: one browser for the whole module (starting Chromium
    costs a second or two of CPU), quit at the end. Named ``browser``, the fixture marks its tests
    ``browser`` (tests/conftest.py), which ``make test-fast`` leaves out."""
    driver = browser_or_skip()
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: Any) -> list[tuple[str, str]]:
    """Every (URL, resource type) the page requested since the last call (DevTools performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            params = message["params"]
            urls.append((params["request"]["url"], params.get("type", "")))
    return urls


def screenshot(driver: Any, module: str, name: str) -> Path:
    """Save the page as ``test-output/<module>/<name>.png`` (for a person to look at)."""
    folder = OUTPUT / module
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
