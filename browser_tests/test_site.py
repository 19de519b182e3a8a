"""The built course site, read in Chromium the way an instructor reads it (served on loopback).

Every page: no request leaves loopback, nothing fails to load, no script error. Every chapter page: math typeset
(no raw TeX left), every figure loaded, saved widget state rendered, no cell shows an error, solutions collapsed
until opened, a page table of contents, a working "download notebook" link. One screenshot per page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import SITE, chapter_sources, screenshot_path

CHAPTER_STEMS = [p.stem for p in chapter_sources()]
CHAPTER_PAGES = sorted(p.relative_to(SITE).as_posix() for p in (SITE / "chapters").glob("*.html"))

# Text of the article outside code, math and widgets: where raw TeX would show if MathJax had not typeset it.
PROSE_TEXT = """() => {
  const article = document.querySelector('article') || document.body;
  const skip = 'pre, code, script, style, mjx-container, textarea, .highlight, .widget-subarea, .cell_output';
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const parts = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.parentElement.closest(skip)) parts.push(node.textContent);
  }
  return parts.join(' ');
}"""

IMAGES = """async () => {
  const images = [...document.querySelectorAll('article img')];
  images.forEach(img => { img.loading = 'eager'; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.map(img => ({src: img.currentSrc.slice(0, 100), ok: img.complete && img.naturalWidth > 0}));
}"""

WIDGETS = """() => [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')].map(s => {
  const area = s.previousElementSibling;
  const rendered = !!area && area.classList.contains('widget-subarea') && !!area.querySelector('.jupyter-widgets');
  const error = !!area && (!!area.querySelector('.widget-error')
                           || /Error (displaying|rendering) widget/.test(area.innerText));
  return {model: JSON.parse(s.textContent).model_id, rendered: rendered, error: error};
})"""


def open_page(page, url: str) -> None:
    """Load a page and wait until the widget bundle has rendered every saved widget view on it."""
    page.goto(url, wait_until="load")
    page.wait_for_function(
        """() => [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')]
                   .every(s => s.previousElementSibling?.querySelector('.jupyter-widgets'))""",
        timeout=60_000)


def wait_for_math(page) -> int:
    """Wait until MathJax has typeset every math element; return how many there are."""
    count = page.locator(".math").count()
    if count:
        page.wait_for_function(
            "() => [...document.querySelectorAll('.math')].every(e => e.querySelector('mjx-container'))",
            timeout=60_000)
    return count


def save_screenshots(page, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshot_path("site", name))
    page.screenshot(path=screenshot_path("site", f"{name}-full"), full_page=True)


def test_every_chapter_has_a_page():
    built = sorted(Path(p).stem for p in CHAPTER_PAGES)
    assert built == CHAPTER_STEMS, f"site {SITE} is stale: rebuild it (make test-browser / make book)"


def test_landing_page_has_the_course_map(watched, site_url):
    page, watch = watched
    open_page(page, site_url + "index.html")
    wait_for_math(page)
    rows = page.locator("table.course-map tbody tr")
    assert rows.count() == len(CHAPTER_STEMS)
    header = page.locator("table.course-map thead").inner_text().lower()
    assert all(word in header for word in ("chapter", "what it teaches", "time per profile"))
    for i, stem in enumerate(CHAPTER_STEMS):
        cells = rows.nth(i).locator("td")
        assert cells.nth(0).locator("a").first.get_attribute("href").endswith(f"chapters/{stem}.html")
        assert cells.nth(1).inner_text().strip() not in ("", "–"), f"{stem}: no goals in the course map"
        times = cells.nth(2).inner_text()
        assert all(p in times for p in ("quick", "standard", "full")), f"{stem}: times per profile: {times!r}"
    assert page.locator("nav.bd-links a, .bd-sidenav a").count() >= len(CHAPTER_STEMS), "sidebar lists chapters"
    save_screenshots(page, "index")
    watch.check()


@pytest.mark.parametrize("path", CHAPTER_PAGES)
def test_chapter_page(watched, site_url, path):
    page, watch = watched
    open_page(page, site_url + path)
    name = Path(path).stem

    # math: typeset by the bundled MathJax, no TeX errors, no raw delimiters left in the prose
    if wait_for_math(page):
        assert page.locator("mjx-merror, mjx-container [data-mjx-error]").count() == 0, "MathJax reported a TeX error"
    prose = page.evaluate(PROSE_TEXT)
    raw = re.findall(r"\$\$|\\\(|\\\[|\$[^\s$][^$\n]{0,200}?[^\s$\\]\$", prose)
    assert not raw, f"raw TeX left on the page: {raw[:5]}"

    # figures: every image has loaded; a chapter has at least one
    images = page.evaluate(IMAGES)
    assert images, "no figure on the chapter page"
    broken = [i["src"] for i in images if not i["ok"]]
    assert not broken, f"images that did not load: {broken}"

    # widgets: every saved widget view rendered by the site's own embed bundle
    widgets = page.evaluate(WIDGETS)
    assert all(w["rendered"] and not w["error"] for w in widgets), f"widgets not rendered: {widgets}"

    # no cell shows an error
    assert page.locator(".cell_output .traceback, .cell_output .output.error").count() == 0
    assert "Traceback (most recent call last)" not in page.locator("article").inner_text()

    # page table of contents, and the download links under the title
    assert page.locator(".bd-toc-nav a, nav.page-toc a").count() >= 1, "no page table of contents"
    links = page.locator("a.download")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    notebook = next((h for h in hrefs if h.endswith(f"{name}.ipynb")), None)
    assert notebook, f"no download link to {name}.ipynb (found {hrefs})"
    response = page.request.get(page.url.rsplit("/", 1)[0] + "/" + notebook)
    assert response.ok and json.loads(response.body())["cells"], "the downloaded notebook is not a notebook"

    # exercise solutions: collapsed until opened
    solutions = page.locator(".cell.tag_solution")
    for i in range(solutions.count()):
        cell = solutions.nth(i)
        assert cell.locator("details.hide").count() == 1, "a solution cell is not collapsible"
        assert not cell.locator(".cell_input").is_visible(), "a solution is visible before it is opened"

    save_screenshots(page, name)
    if solutions.count():
        first = solutions.first
        first.locator("summary").click()
        assert first.locator(".cell_input").is_visible(), "a solution does not open when clicked"
        first.screenshot(path=screenshot_path("site", f"{name}-solution-opened"))
    watch.check()


def test_chapter_opened_from_disk(watched):
    """The site also works opened as files (file://): math, figures and widgets, still with no external request."""
    page, watch = watched
    by_widgets = sorted(CHAPTER_PAGES, key=lambda p: -(SITE / p).read_text(encoding="utf-8").count("widget-view+json"))
    path = by_widgets[0]
    open_page(page, (SITE / path).as_uri())
    assert wait_for_math(page) > 0, "no math on the page"
    images = page.evaluate(IMAGES)
    assert images and all(i["ok"] for i in images), f"images that did not load: {images}"
    widgets = page.evaluate(WIDGETS)
    assert widgets and all(w["rendered"] and not w["error"] for w in widgets), f"widgets not rendered: {widgets}"
    save_screenshots(page, f"{Path(path).stem}-from-disk")
    watch.check()


def test_search_finds_a_chapter(watched, site_url):
    page, watch = watched
    first = CHAPTER_PAGES[0]
    open_page(page, site_url + first)
    word = max(re.findall(r"[A-Za-z]{4,}", page.locator("h1").first.inner_text()), key=len)
    page.goto(site_url + f"search.html?q={word}", wait_until="load")
    results = page.locator("#search-results li")
    results.first.wait_for(timeout=30_000)
    assert results.count() >= 1
    save_screenshots(page, "search")
    watch.check()
