"""The pages of ``farm-merge serve`` in a real headless browser (Debian's chromium, driven
by playwright) with no network: every request leaving 127.0.0.1 is refused and recorded.

Skipped when chromium or playwright is missing, unless ``FARM_MERGE_REQUIRE_BROWSER=1``
(``.ci/run`` sets it and installs chromium), which makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.parse

import pytest

from serving import DEAD_ID, SCRIPT_ID, LiveExperiment, Server

REQUIRE = "FARM_MERGE_REQUIRE_BROWSER"

#: Chromium with nothing of its own reaching out: no updates, sync, QUIC or first-run pages.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.timeout(180)


def chromium_or_skip() -> str:
    chromium = shutil.which("chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        reason = "chromium (apt-get install chromium) or playwright (the test extra) is missing"
        if os.environ.get(REQUIRE):
            pytest.fail(f"{reason}, and {REQUIRE} is set")
        pytest.skip(reason)
    return chromium


@pytest.fixture
def browser(tmp_path):
    """A page in a fresh chromium profile; ``page.fm_errors`` collects script errors and
    ``page.fm_outside`` every request that was not for the server on 127.0.0.1."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        page = context.pages[0] if context.pages else context.new_page()
        page.fm_errors, page.fm_outside = [], []

        def route(request_route):
            host = urllib.parse.urlsplit(request_route.request.url).hostname
            if host == "127.0.0.1":
                request_route.continue_()
            else:
                page.fm_outside.append(request_route.request.url)
                request_route.abort()

        context.route("**/*", route)
        page.on("pageerror", lambda error: page.fm_errors.append(str(error)))
        page.on("console", lambda message: page.fm_errors.append(message.text) if message.type == "error" else None)
        page.on("dialog", lambda dialog: (page.fm_errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        yield page
        context.close()


def drawn(page) -> dict[str, str]:
    """Wait for every chart of the page; what each one drew (rows), by kind."""
    page.wait_for_selector("body[data-charts-drawn=true]", timeout=60_000)
    charts = page.locator(".fm-chart")
    result = {}
    for i in range(charts.count()):
        chart = charts.nth(i)
        assert chart.locator(".fm-plot svg").count() >= 1, chart.inner_html()
        result[chart.get_attribute("data-kind")] = chart.get_attribute("data-rendered")
    return result


def test_the_pages_draw_their_charts_with_no_network_and_show_live_progress(browser, _runs_template, tmp_path):
    live = LiveExperiment(_runs_template, tmp_path / "exp.db")
    server = Server(live.path)
    page = browser
    try:
        page.goto(server.url)
        charts = drawn(page)
        assert set(charts) == {"series", "final", "births_deaths"}
        assert all(int(rows) > 0 for rows in charts.values()), charts
        legend = page.locator(".fm-chart[data-kind=series] svg.marks").text_content()
        assert "learning_rate" in legend and "0.5" in legend  # coloured by the swept parameter
        row = page.locator("tr", has=page.locator("td.fm-status")).filter(has_text="running (stale)")
        assert row.locator("td").first.inner_text() == DEAD_ID
        screenshot = tmp_path / "experiment.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        if os.environ.get("FARM_MERGE_SCREENSHOTS"):  # where a person wants to look at them
            page.screenshot(path=os.path.join(os.environ["FARM_MERGE_SCREENSHOTS"], "serve-experiment.png"),
                            full_page=True)

        # A step logged while the page is open shows on "Refresh now", without a reload.
        script_row = f"tr[data-simulation-id={json.dumps(SCRIPT_ID)}] td"  # a CSS string, quotes escaped
        cell = page.locator(script_row).nth(2)
        assert cell.inner_text() == "1"
        live.log_another_step()
        page.click(".fm-refresh-now")
        page.wait_for_selector("body[data-refreshes='1'][data-refreshing=false]")
        assert page.locator(script_row).nth(2).inner_text() == "2"

        # The simulation whose id is markup: its link, its page, its charts; nothing runs.
        page.locator("td a", has_text=SCRIPT_ID).click()
        page.wait_for_selector("h1")
        assert page.locator("h1").inner_text() == SCRIPT_ID
        charts = drawn(page)
        assert set(charts) == {"simulation_metrics", "population"} and all(int(n) > 0 for n in charts.values())
        page.screenshot(path=str(tmp_path / "simulation.png"), full_page=True)
        if os.environ.get("FARM_MERGE_SCREENSHOTS"):
            page.screenshot(path=os.path.join(os.environ["FARM_MERGE_SCREENSHOTS"], "serve-simulation.png"),
                            full_page=True)
        assert page.fm_errors == []
        assert page.fm_outside == []
    finally:
        server.stop(signal.SIGKILL)
        live.close()
