"""The web console in a real browser: headless Chromium driven by Selenium (see conftest; skipped with a
message where no Chromium is installed).

One walk through the console as a person would (sign in, open a user, compare the lists with the
API, open items and check their media, send a click, look at the experiments and the model,
reload as admin), then the keyboard alone, an accessibility check of every page with axe-core
(vendored, ``vendor/axe.min.js``), and the API docs working offline. Screenshots of each page go to
``build/test-output/console/`` (``TLREC_TEST_OUTPUT``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

AXE = Path(__file__).with_name("vendor") / "axe.min.js"
WAIT = 30.0


def _wait(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = WAIT) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        logs = driver.get_log("browser")
        raise AssertionError(f"timed out waiting for {what}; page: {driver.current_url}; "
                             f"browser log: {logs[-5:]}") from None


def _js(driver: Any, script: str, *args: Any) -> Any:
    return driver.execute_script(script, *args)


def _heading(driver: Any) -> str:
    return _js(driver, "const h = document.querySelector('main h1'); return h ? h.textContent : '';")


def _shown(driver: Any, list_id: str) -> list[str]:
    return _js(driver, "return [...document.querySelectorAll(`#${arguments[0]} > li`)].map(li => li.dataset.itemId);",
               list_id)


def _screenshot(driver: Any, path: Path) -> None:
    """The whole page (beyond the window) as PNG."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path.write_bytes(base64.b64decode(shot["data"]))


def _sign_in(driver: Any, base: str, key: str) -> None:
    driver.get(f"{base}/#/catalog")
    _js(driver, "sessionStorage.clear();")
    driver.get(f"{base}/#/catalog")
    driver.refresh()
    field = _wait(driver, lambda d: d.find_elements("id", "api-key"), "the sign-in form")[0]
    field.send_keys(key)
    driver.find_element("css selector", "#login-form button[type=submit]").click()
    _wait(driver, lambda d: _heading(d) == "Catalog", "the catalog after signing in")


def _axe(driver: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the current page (every rule axe runs by default); injected once per page load."""
    if not _js(driver, "return typeof window.axe !== 'undefined';"):
        _js(driver, AXE.read_text(encoding="utf-8"))
    return driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        axe.run(document, {resultTypes: ["violations"]})
          .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                   nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}))))
          .catch(e => done([{id: "axe-error", help: String(e)}]));
    """)


@pytest.fixture(scope="module")
def media_items(world) -> dict[str, str]:
    """A product (it has an image) and a track (it has audio) of the demo catalog."""
    import polars as pl

    ids = pl.read_parquet(world.catalog)["item_id"].to_list()
    return {"image": next(i for i in ids if i.startswith("prod-")), "audio": next(i for i in ids if i.startswith("track-"))}


@pytest.fixture(scope="module")
def signed_in(browser, console, console_keys):
    _sign_in(browser, console.base, console_keys["user"])
    return browser



def _open_from_catalog(driver: Any, base: str, item_id: str, what: str) -> None:
    """Search the catalog page for ``item_id`` and click its result (``what`` names it in a timeout)."""
    driver.get(f"{base}/#/catalog?q={quote(item_id)}")
    link = f"#catalog-results li[data-item-id='{item_id}'] a"
    _wait(driver, lambda d: d.find_elements("css selector", link), f"{what} in the catalog")
    driver.find_element("css selector", link).click()


def test_console_walkthrough(signed_in, console, console_keys, treatment_user, control_user, media_items,
                             output_dir):
    driver, base = signed_in, console.base
    _screenshot(driver, output_dir / "catalog.png")

    # a user: the lists shown are the API's, each item explained
    driver.find_element("link text", "User").click()
    _wait(driver, lambda d: _heading(d) == "User", "the user form")
    field = driver.find_element("id", "user-id")
    field.send_keys(treatment_user)
    field.submit()
    _wait(driver, lambda d: len(_shown(d, "recommendations")) == 10 and len(_shown(d, "next-items")) == 10,
          "both lists")
    with console.client() as api:
        expected = [i["item_id"] for i in api.get(f"/v1/users/{treatment_user}/recommendations").json()["items"]]
        expected_next = [i["item_id"] for i in api.get(f"/v1/users/{treatment_user}/next").json()["items"]]
    assert _shown(driver, "recommendations") == expected
    assert _shown(driver, "next-items") == expected_next
    assert _js(driver, "return document.querySelectorAll('#recommendations details.why').length") == 10
    history_rows = _js(driver, "return document.querySelectorAll('#h-history ~ table tbody tr').length")
    assert history_rows > 0
    driver.find_element("css selector", "#recommendations > li:first-child summary").click()
    _screenshot(driver, output_dir / "user.png")

    # an item with an image: found in the catalog and clicked, its image decodes
    _open_from_catalog(driver, base, media_items["image"], "the product")
    _wait(driver, lambda d: _js(d, "const i = document.querySelector('img.item-image');"
                                   "return Boolean(i && i.complete && i.naturalWidth > 0);"), "the item's image")
    _wait(driver, lambda d: len(_shown(d, "similar-list")) > 0, "similar items")
    _screenshot(driver, output_dir / "item-image.png")

    # an item with audio: the player loads it
    _open_from_catalog(driver, base, media_items["audio"], "the track")
    _wait(driver, lambda d: _js(d, "const a = document.querySelector('main audio[data-media=audio]');"
                                   "return Boolean(a && a.readyState >= 1 && a.duration > 0);"), "the item's audio")
    _screenshot(driver, output_dir / "item-audio.png")

    # send a click on the top recommendation: the lists change, as the API's do
    driver.get(f"{base}/#/users/{quote(treatment_user)}")
    _wait(driver, lambda d: _shown(d, "recommendations") == expected, "the user's lists again")
    top = expected[0]
    driver.find_element("css selector", "#recommendations > li:first-child button[data-event=click]").click()
    _wait(driver, lambda d: _shown(d, "recommendations") and _shown(d, "recommendations")[0] != top,
          "the list to change after the click")
    with console.client() as api:
        after = [i["item_id"] for i in api.get(f"/v1/users/{treatment_user}/recommendations").json()["items"]]
    assert top not in after and _shown(driver, "recommendations") == after
    last = _js(driver, "const rows = document.querySelectorAll('#h-history ~ table tbody tr');"
                       "return [...rows[rows.length - 1].cells].map(c => c.textContent);")
    assert last[2] == "click" and last[4] == "fresh"
    _screenshot(driver, output_dir / "user-after-click.png")

    # experiments: variants, exposures and the analysis with its plots (a control user visits too)
    with console.client() as api:
        api.get(f"/v1/users/{control_user}/recommendations").raise_for_status()
    driver.find_element("link text", "Experiments").click()
    _wait(driver, lambda d: _js(d, "return document.querySelectorAll('main img.plot').length") == 3,
          "the experiment's plots")
    _wait(driver, lambda d: _js(d, "return [...document.querySelectorAll('main img.plot')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)"), "the plots to decode")
    assert _js(driver, "return document.querySelector('[data-srm]').dataset.srm") in ("ok", "alert")
    _screenshot(driver, output_dir / "experiments.png")

    # the model: tables and plots; reloading needs the admin key
    driver.find_element("link text", "Models").click()
    _wait(driver, lambda d: _heading(d).startswith("Model "), "the models page")
    _wait(driver, lambda d: _js(d, "return [...document.querySelectorAll('main img.plot')]"
                                   ".filter(i => i.complete && i.naturalWidth > 0).length") == 2,
          "the transfer and encoder plots")
    assert not driver.find_element("id", "reload").is_enabled()
    _screenshot(driver, output_dir / "models.png")
    _sign_in(driver, base, console_keys["admin"])
    driver.find_element("link text", "Models").click()
    _wait(driver, lambda d: d.find_elements("id", "reload") and d.find_element("id", "reload").is_enabled(),
          "the reload button for the admin")
    driver.find_element("id", "reload").click()
    _wait(driver, lambda d: "Unchanged" in d.find_element("id", "reload-result").text, "the reload's answer")
    _screenshot(driver, output_dir / "models-admin.png")


def test_keyboard_alone(signed_in, console, treatment_user):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver = signed_in

    def press(*keys: str) -> None:
        ActionChains(driver).send_keys(*keys).perform()

    def active() -> str:
        return _js(driver, "const e = document.activeElement;"
                           "return `${e.tagName.toLowerCase()}#${e.id}|${e.textContent.trim().slice(0, 40)}`;")

    driver.get(f"{console.base}/#/catalog")
    driver.refresh()
    _wait(driver, lambda d: _heading(d) == "Catalog", "the catalog")
    press(Keys.TAB)
    assert active().startswith("a#skip-link"), active()
    press(Keys.ENTER)
    assert active().startswith("main#main"), active()
    driver.refresh()
    _wait(driver, lambda d: _heading(d) == "Catalog", "the catalog")
    press(Keys.TAB, Keys.TAB, Keys.TAB)  # skip link, Catalog, User
    assert active().endswith("|User"), active()
    press(Keys.ENTER)
    _wait(driver, lambda d: _heading(d) == "User", "the user form, by keyboard")
    assert active().startswith("h1"), active()  # the new page's heading takes the focus
    press(Keys.TAB)
    assert active().startswith("input#user-id"), active()
    press(treatment_user, Keys.ENTER)
    _wait(driver, lambda d: len(_shown(d, "recommendations")) == 10, "the user's lists, by keyboard")
    _js(driver, "arguments[0].focus();",
        driver.find_element("css selector", "#recommendations > li:first-child button[data-event=view]"))
    assert "Send view on" in _js(driver, "return document.activeElement.getAttribute('aria-label')")
    before = _shown(driver, "recommendations")
    press(Keys.TAB)  # to the Click button
    assert _js(driver, "return document.activeElement.dataset.event") == "click"
    press(Keys.ENTER)
    _wait(driver, lambda d: _shown(d, "recommendations") and _shown(d, "recommendations") != before,
          "the list to change after a click sent by keyboard")
    _wait(driver, lambda d: active().startswith("h2#h-recs"), "the focus back on the list's heading")


def test_every_page_passes_axe(signed_in, console, console_keys, treatment_user, media_items, output_dir):
    driver, base = signed_in, console.base
    assert AXE.is_file(), f"{AXE} missing (see vendor/README.md)"
    pages = {  # name: (route, what shows once it has loaded)
        "catalog": ("catalog?q=a", "#catalog-results li"),
        "item-image": (f"items/{media_items['image']}", "#similar-list li"),
        "item-audio": (f"items/{media_items['audio']}", "#similar-list li"),
        "user-form": ("users", "#user-id"),
        "user": (f"users/{quote(treatment_user)}", "#next-items li details"),
        "experiments": ("experiments", "img.plot"),
        "models": ("models", "img.plot"),
    }
    failures = {}
    driver.get(f"{base}/#/catalog")
    for name, (route, ready) in pages.items():  # moving by hash, as a person's clicks do: one page load
        _js(driver, "location.hash = arguments[0];", f"#/{route}")
        path = route.split("?")[0]
        _wait(driver, lambda d, css=f"main[data-route='{path}'] {ready}": d.find_elements("css selector", css),
              f"the {name} page")
        for summary in driver.find_elements("css selector", "main details > summary")[:3]:
            summary.click()  # open explanations and the manifest: check them too
        violations = _axe(driver)
        if violations:
            failures[name] = violations
    _js(driver, "sessionStorage.clear();")
    driver.get(f"{base}/#/catalog")
    driver.refresh()
    _wait(driver, lambda d: d.find_elements("id", "api-key"), "the sign-in form")
    if violations := _axe(driver):
        failures["sign-in"] = violations
    _screenshot(driver, output_dir / "sign-in.png")
    _sign_in(driver, base, console_keys["user"])
    assert not failures, failures


_LOADED_FROM = """return performance.getEntriesByType('resource')
    .filter(e => ['script', 'link', 'css', 'fetch', 'xmlhttprequest'].includes(e.initiatorType))
    .map(e => new URL(e.name).origin);"""


def test_api_docs_work_offline(browser, console, output_dir):
    """/docs and /redoc render from the package's copies of Swagger UI and ReDoc (their pages forbid other hosts)."""
    browser.get(f"{console.base}/docs")
    _wait(browser, lambda d: d.find_elements("css selector", ".swagger-ui .info .title"), "Swagger UI to render")
    _wait(browser, lambda d: len(d.find_elements("css selector", ".opblock")) > 10, "the operations")
    assert set(_js(browser, "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin);")) \
        == {console.base}
    _screenshot(browser, output_dir / "docs.png")
    browser.get(f"{console.base}/redoc")
    _wait(browser, lambda d: len(d.find_elements("css selector", "[data-section-id^='operation/']")) > 10,
          "ReDoc's operations")
    assert set(_js(browser, _LOADED_FROM)) == {console.base}
