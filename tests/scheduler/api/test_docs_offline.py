"""``/docs`` and ``/redoc`` render in a real browser that can reach nothing but the API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import browser_session, requested_urls, screenshot
from tests.conftest import ApiStack
from tests.procs import wait_for


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from browser_session()


def test_docs_pages_reference_only_our_own_assets(api: ApiStack) -> None:
    for page in ("/docs", "/redoc"):
        html = httpx.get(api.api_url + page).text
        assert "cdn." not in html and "fonts.googleapis" not in html, html
        assert "/static-offline-docs/" in html
    asset = httpx.get(api.api_url + "/static-offline-docs/swagger-ui-bundle.js")
    assert asset.status_code == 200 and "SwaggerUIBundle" in asset.text[:2000]


def test_swagger_ui_renders_operations_offline(api: ApiStack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    requested_urls(browser)  # drop what an earlier test requested
    browser.get(api.api_url + "/docs")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) > 10, timeout=30, what="Swagger UI")
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/v1/campaigns" in {p.replace("\u200b", "") for p in paths}
    title = browser.find_element(By.CSS_SELECTOR, ".info .title").text
    assert "wechat-broadcast" in title
    urls = [url for url, _ in requested_urls(browser)]
    assert urls and all(u.startswith((api.api_url, "data:")) for u in urls), urls
    screenshot(browser, "docs", "swagger")


def test_redoc_renders_offline(api: ApiStack, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    requested_urls(browser)
    browser.get(api.api_url + "/redoc")
    wait_for(
        lambda: "/v1/campaigns" in (browser.find_element(By.TAG_NAME, "body").text or ""), timeout=30, what="ReDoc"
    )
    # every script, style and API call is ours; ReDoc's "powered by" logo image is its one outside link
    # (unreachable here: the page renders without it)
    foreign = [
        (url, kind)
        for url, kind in requested_urls(browser)
        if not url.startswith((api.api_url, "data:", "blob:" + api.api_url))
    ]
    assert all(kind == "Image" for _, kind in foreign), foreign
    path: Path = screenshot(browser, "docs", "redoc")
    assert path.stat().st_size > 10_000
