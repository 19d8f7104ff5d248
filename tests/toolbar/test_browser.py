"""RoutingPanel in a browser: a page served by Django's live server, opened in headless Chromium.

The page's view enters a PrimaryReplica block that reads its replica and a block on a
tenant's runtime configuration; the test clicks the panel's link in the toolbar, reads
the rows the panel shows, and saves a screenshot to ``test-output/`` (or
``$DYNROUTE_TEST_OUTPUT``).

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package: off
CI the test is skipped, with the reason, when one is missing; with ``CI=true`` it fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import dynroute
from tests.helpers import unavailable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pytest_django.live_server_helper import LiveServer

CHROMIUM = Path(os.environ.get("DYNROUTE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("DYNROUTE_CHROMEDRIVER", "/usr/bin/chromedriver"))
OUTPUT = Path(os.environ.get("DYNROUTE_TEST_OUTPUT", Path(__file__).parents[2] / "test-output"))
WAIT = 15  # seconds

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica1"])


def _missing() -> str | None:
    """Say what the browser test lacks, or ``None``."""
    try:
        import selenium  # noqa: F401, PLC0415 - only to know it is there
    except ImportError:
        return "the selenium package is not installed (pip install selenium)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install {package})"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium, driven by Selenium through Debian's chromedriver."""
    missing = _missing()
    if missing is not None:
        unavailable(f"the browser test cannot run: {missing}")
    from selenium import webdriver  # noqa: PLC0415 - optional
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1600,1200")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _rows(root: Any, row_class: str) -> list[dict[str, str]]:
    """``{data-field: text}`` of each row of ``row_class`` in the panel."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415 - optional

    found = []
    for row in root.find_elements(By.CSS_SELECTOR, f"#RoutingPanel tr.{row_class}"):
        cells = row.find_elements(By.CSS_SELECTOR, "td[data-field]")
        found.append(
            {cell.get_attribute("data-field"): " ".join(cell.text.split()) for cell in cells}
        )
    return found


def test_the_panel_shows_the_blocks_and_queries_of_the_page(
    live_server: LiveServer, browser: Any, tenant: dict[str, Any], tmp_path: Path
) -> None:
    """Click "Routing" in the toolbar: the replica and tenant blocks, each query's database."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415 - optional
    from selenium.webdriver.support.wait import WebDriverWait  # noqa: PLC0415

    browser.get(f"{live_server.url}/routed/")
    wait = WebDriverWait(browser, WAIT)
    # The toolbar lives in a shadow root (USE_SHADOW_DOM, the toolbar's default).
    root = wait.until(lambda driver: driver.find_element(By.ID, "djDebugRoot").shadow_root)
    link = wait.until(
        lambda _: root.find_element(By.CSS_SELECTOR, "#djDebugPanelList a.RoutingPanel")
    )
    assert "Routing" in link.text
    assert "2 blocks" in link.text
    link.click()
    wait.until(lambda _: _rows(root, "dynroute-query"))

    blocks = _rows(root, "dynroute-block")
    alias = dynroute.in_database(tenant, write=True).route.alias
    assert [(row["alias"], row["reads"]) for row in blocks] == [
        ("default", "replica1"),
        (alias, alias),
    ]
    assert blocks[0]["policy"].startswith("PrimaryReplica('default', ('replica1',)")
    assert "runtime configuration" in blocks[1]["notes"]
    queries = _rows(root, "dynroute-query")
    assert [(row["alias"], row["kind"]) for row in queries] == [
        ("default", "read"),
        ("replica1", "read"),
        (alias, "write"),
        (alias, "read"),
    ]
    assert queries[0]["decided_by"] == "no block: Django's default"
    assert queries[1]["decided_by"] == f"block #{blocks[0]['number']}: PrimaryReplica"
    assert queries[1]["rule"] == "PrimaryReplica: the replica chosen on entry"
    for query in queries[2:]:
        assert query["decided_by"] == f"block #{blocks[1]['number']}: ReadWrite"

    screenshot = tmp_path / "routing-panel.png"
    assert browser.save_screenshot(str(screenshot))
    OUTPUT.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, OUTPUT / "routing-panel.png")
