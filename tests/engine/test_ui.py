"""What on-call sees in the real Prefect UI (served by the session's Prefect server), in
headless Chromium: a failed run's artifact shows the whole error and the Next: line, and a
previewed run's state badge reads "Preview", not a plain "Completed".

Chromium comes from the system (Debian's `chromium` package); Playwright only drives it, so
`playwright install` (which downloads a browser) is never needed. Screenshots are saved under
the test's tmp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hookline.flows import artifact, runtime
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness
from tests.engine.test_run_story import story_of, unconfigured
from vendor_fakes import FakeVendors

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: What clips the element: itself (overflowing its box), the window, or an ancestor that hides
#: or scrolls what overflows it (Prefect's table cells and code blocks do).
CLIPPED = """e => {
  const r = e.getBoundingClientRect(), out = [];
  if (e.scrollWidth > e.clientWidth) out.push('itself');
  if (r.right > document.documentElement.clientWidth) out.push('window');
  for (let a = e.parentElement; a; a = a.parentElement) {
    const s = getComputedStyle(a), b = a.getBoundingClientRect();
    if (s.overflowX !== 'visible' && (r.left < b.left || r.right > b.right)) out.push(a.tagName);
  }
  return out;
}"""

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"no Chromium at {CHROMIUM} (apt-get install chromium; CI installs it)",
    ),
]


@pytest.fixture
async def page(prefect_server: Any) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(15_000)
            yield page
        finally:
            await browser.close()


async def test_the_ui_shows_a_failure_whole_with_what_to_do_next_and_a_preview_as_preview(
    engine: EngineHarness, fakes: FakeVendors, page: Any, prefect_server: Any, tmp_path: Path
) -> None:
    ui = prefect_server.ui_url
    rt = runtime.current()
    configured = rt.environ

    # a run that sent nothing (its connectors are not configured) ...
    rt.preview, rt.environ = True, unconfigured(configured, "SLACK_", "SERVICENOW_")
    previewed = await engine.run(sample(current_status="outage", impact="high"))
    assert previewed.status == "done", previewed.last_error
    # ... and one that failed
    rt.preview, rt.environ = False, configured
    fakes.servicenow.fail_next(100, status=500, path="/api/now/table/incident")
    payload = sample(current_status="outage", impact="high")
    entry = await engine.run(payload)
    assert entry.status == "failed"
    error = str(entry.last_error).split(" attempt(s): ", 1)[1]
    story = await story_of(engine, entry.flow_runs["outage"])

    # (a) the failed run's artifact, as Prefect's UI renders it
    await page.goto(f"{ui}/artifacts/artifact/{story.id}")
    failure = page.get_by_text(error[:40])
    await failure.wait_for()
    await page.screenshot(path=tmp_path / "failed-artifact.png", full_page=True)
    text = (await page.inner_text("body")).replace(artifact.ZWSP, "")
    assert error in text  # the whole error ...
    assert await failure.evaluate(CLIPPED) == []  # ... and none of it clipped
    replay = f"hookline replay {payload['event_id']} --source solveforce"
    assert (
        "Next: servicenow was unreachable or failing (4 attempt(s)): retry later; once it "
        f"answers, {replay}"
    ) in " ".join(text.split())

    # (b) the run that sent nothing is not shown as a plain success
    await page.goto(rt.run_url(previewed.flow_runs["outage"]) or "")
    badge = page.locator(".state-badge").first
    await badge.wait_for()
    await page.screenshot(path=tmp_path / "preview-run.png")
    assert (await badge.inner_text()).strip() == "Preview"
