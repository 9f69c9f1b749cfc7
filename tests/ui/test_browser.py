"""The UI in a real headless browser: Debian's Chromium driven by Playwright, against a live
uvicorn server on 127.0.0.1 over a generated workspace. Offline: Playwright is launched with
``executable_path`` (``playwright install`` is never called). Screenshots of every page go to
``test-output/ui/`` (or ``$TUNESMITH_UI_SCREENSHOTS``), not committed."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import ADMIN_KEY, REVIEWER_KEY, make_app, running

for _module in ("fastapi", "uvicorn", "jinja2", "itsdangerous", "python_multipart", "markdown_it"):
    pytest.importorskip(_module, reason="the web UI needs the ui extra: pip install 'tunesmith[ui]'")

CHROMIUM = os.environ.get("TUNESMITH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("TUNESMITH_UI_SCREENSHOTS") or Path(__file__).resolve().parents[2] / "test-output" / "ui")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install it with `apt-get install -y chromium "
                       "fonts-noto-cjk` (Debian) or set TUNESMITH_CHROMIUM=/path/to/chromium; never `playwright install`"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")

PAGES = {"overview": "/", "models": "/models", "model": None, "evaluation": "/evaluation", "runs": "/runs",
         "data": "/data", "review": "/review", "deployments": "/deployments", "monitoring": "/monitoring"}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from .conftest import ui_workspace

    gen = ui_workspace.build(tmp_path_factory.mktemp("ui") / "proj", requests=600, items=40, cases=30)
    with running(make_app(gen)) as url:
        yield gen, url


class Watch:
    """Console errors, failed requests and HTTP errors of one page."""

    def __init__(self, page):
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)

    def _failed(self, request) -> None:
        # a navigation cancels the page's requests still in flight (net::ERR_ABORTED): the browser
        # leaving a page, not the server failing it; an error status is caught by "response"
        if "ERR_ABORTED" not in (request.failure or ""):
            self.problems.append(f"failed: {request.url} {request.failure}")


def _login(browser, url: str, key: str, viewport=None):
    context = browser.new_context(viewport=viewport or {"width": 1360, "height": 900})
    page = context.new_page()
    watch = Watch(page)
    page.goto(url + "/")
    page.get_by_label("Your UI key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(url + "/")
    return page, watch


def test_every_page_opens_without_errors_and_is_screenshotted(browser, site):
    gen, url = site
    page, watch = _login(browser, url, ADMIN_KEY)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in PAGES.items():
        page.goto(url + (path or f"/models/{gen.versions[1]}"))
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").first.is_visible(), name
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !(e.tagName === 'BUTTON' && e.innerText.trim()))
            .map(e => e.outerHTML.slice(0, 80))""")
        assert unlabelled == [], (name, unlabelled)  # every control has an accessible name
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    assert watch.problems == []
    # a phone: every page reads without scrolling the whole page sideways (wide tables scroll alone)
    phone, phone_watch = _login(browser, url, REVIEWER_KEY, viewport={"width": 390, "height": 844})
    for name, path in PAGES.items():
        phone.goto(url + (path or f"/models/{gen.versions[1]}"))
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1, name
    phone.goto(url + "/review")
    phone.screenshot(path=str(SHOTS / "review-phone.png"), full_page=True)
    assert phone_watch.problems == []


def test_the_quarantine_pager_swaps_the_table_in_place(browser, site):
    _, url = site
    page, watch = _login(browser, url, ADMIN_KEY)
    page.goto(url + "/data")
    first = page.locator("#quarantine tbody tr").first.inner_text()
    page.evaluate("window.__same_document = true")
    page.locator("#quarantine a[rel=next]").click()
    page.wait_for_url(re.compile(r".*page=2"))
    page.wait_for_function("document.querySelector('#quarantine nav span').innerText.startsWith('page 2')")
    assert page.evaluate("window.__same_document === true")  # htmx swapped it: no page load
    assert page.locator("#quarantine tbody tr").first.inner_text() != first
    assert watch.problems == []


def test_charts_render(browser, site):
    _, url = site
    page, watch = _login(browser, url, ADMIN_KEY)
    for path, chart in (("/runs", "loss-chart"), ("/deployments", "traffic-chart"), ("/deployments", "latency-chart"),
                        ("/monitoring", "drift-1")):
        page.goto(url + path)
        page.locator(f"#{chart} canvas").wait_for()
        drawn = page.evaluate("""(id) => {
            const c = document.querySelector('#' + id + ' canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let painted = 0, coloured = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (d[i + 3] === 0) continue;
                painted++;
                if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 80) coloured++;
            }
            return {w: c.width, h: c.height, painted: painted, coloured: coloured};
        }""", chart)
        # axes and grid alone are grey: only a drawn series paints coloured pixels
        assert drawn["w"] > 200 and drawn["h"] > 100 and drawn["coloured"] > 50, (chart, drawn)
    page.goto(url + "/evaluation")
    assert page.locator("svg.cichart rect.bar").count() >= 5
    assert watch.problems == []


def test_ten_items_reviewed_with_the_keyboard_only(browser, site):
    from tunesmith.review.queue import ReviewQueue

    gen, url = site
    queue = ReviewQueue(gen.cfg.workspace_dir / "tunesmith.db")
    page, watch = _login(browser, url, REVIEWER_KEY)
    page.goto(url + "/review")
    expected = {}
    page.wait_for_selector("body[data-ready]")

    def press(*keys: str) -> None:
        with page.expect_navigation():
            for key in keys:
                page.keyboard.press(key)
        page.wait_for_selector("body[data-ready]")

    for n in range(10):
        item = int(re.search(r"Item (\d+)", page.locator("#h-item").inner_text()).group(1))
        current = queue.get(item)
        if n % 3 == 0:  # approve as answered
            press("a")
            expected[item] = ("approve", {})
        elif n % 3 == 1:  # the 2nd allowed value of the first field, the 1st of the second, save
            names = list(current.fields)
            picks = {names[0]: current.fields[names[0]].allowed[1], names[1]: current.fields[names[1]].allowed[0]}
            press("2", "1", "Enter")
            changes = {k: v for k, v in picks.items() if v != current.fields[k].value}
            expected[item] = ("correct" if changes else "approve", changes)
        else:  # reject: the reason picker, its 2nd code, x
            press("r", "2", "x")
            expected[item] = ("reject", {})
        assert f"Saved item {item}" in page.locator("#saved").inner_text()
    codes = gen.cfg.review.reason_codes
    for item, (action, changes) in expected.items():
        decisions = queue.get(item).decisions
        assert len(decisions) == 1 and decisions[0].by == "rita" and decisions[0].action == action, item
        assert {k: to for k, (_, to) in decisions[0].changes.items()} == changes
        if action == "reject":
            assert decisions[0].reason == codes[1]
    audit_items = {a.item for a in queue.audit()}
    assert set(expected) <= audit_items
    # j / k move between items without deciding
    page.goto(url + "/review")
    page.wait_for_selector("body[data-ready]")
    first = page.locator("#h-item").inner_text()
    press("j")
    assert page.locator("#h-item").inner_text() != first
    press("k")
    assert page.locator("#h-item").inner_text() == first
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "review-after.png"), full_page=True)
    assert watch.problems == []


def test_promote_and_roll_back_from_the_models_page(browser, site):
    from tunesmith.registry import ModelRegistry

    gen, url = site
    reg = ModelRegistry.from_config(gen.cfg)
    page, watch = _login(browser, url, ADMIN_KEY)
    page.goto(url + f"/models/{gen.versions[2]}")
    page.get_by_label("Reason (recorded in the ledger)").fill("wins on every field")
    page.get_by_role("button", name="Promote").click()
    page.wait_for_selector("p.note")
    assert "ledger row" in page.locator("p.note").inner_text()
    move = reg.history("champion")[-1]
    assert (move.action, move.to_model, move.by, move.reason) == ("promote", gen.versions[2], "alice",
                                                                  "wins on every field")
    page.goto(url + "/models")
    page.get_by_label("Alias", exact=True).select_option("champion")
    page.get_by_label("Reason (recorded in the ledger)").fill("latency doubled")
    page.get_by_role("button", name="Roll back").click()
    page.wait_for_selector("p.note")
    move = reg.history("champion")[-1]
    assert (move.action, move.to_model, move.reason) == ("rollback", gen.versions[1], "latency doubled")
    assert watch.problems == []


def test_a_reviewer_pressing_promote_sees_why_and_nothing_moves(browser, site):
    from tunesmith.registry import ModelRegistry

    gen, url = site
    reg = ModelRegistry.from_config(gen.cfg)
    before = reg.history()
    page, _ = _login(browser, url, REVIEWER_KEY)
    page.goto(url + f"/models/{gen.versions[2]}")
    page.get_by_label("Reason (recorded in the ledger)").fill("I would like to")
    page.get_by_role("button", name="Promote").click()
    assert "Only an admin may promote" in page.locator("p.alert").inner_text()
    assert reg.history() == before
