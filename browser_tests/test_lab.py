"""The chapters in JupyterLab, driven the way a learner drives them: open, Run All, move a widget control.

JupyterLab runs on 127.0.0.1 at a free port with a random token and COURSE_PROFILE=quick in the server's
environment (so every kernel runs the quick profile), on the notebooks generated from chapters/*.py
(`make notebooks`). The chapters with the richest widgets are opened (LAB_CHAPTERS="03_cnn,04_rnn" picks others,
LAB_CHAPTER_COUNT sets how many, default 2). For each: no dialog blocks it on open, Run All (through the Run
menu) finishes with every cell executed in the quick profile, then a slider next to kernel-drawn output is moved
with the keyboard (a drop-down is picked instead only where no slider is) and the output the kernel redraws in
response must change on the page. Autosave is off, so the chapters' files are left as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import CHAPTERS_DIR, PageWatch, chapter_sources, screenshot_path

RUN_ALL_TIMEOUT_S = float(os.environ.get("LAB_RUN_ALL_TIMEOUT", 600))
# Widgets a chapter builds: ipywidgets constructors, the course's slider helper, and Explorer panels.
WIDGET = re.compile(r"\bwidgets\.[A-Z]\w*\(|\blib\.widgets\.slider\(|\bExplorer\(")

# JupyterLab user settings for the test: no autosave (the chapters stay untouched), every cell rendered
# (no windowing, so the test can see every prompt), no news or update checks.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def widget_score(path: Path) -> int:
    """How rich a chapter's widgets are: controls and Explorer panels it builds."""
    return len(WIDGET.findall(path.read_text(encoding="utf-8")))


def lab_chapters() -> list[str]:
    chosen = os.environ.get("LAB_CHAPTERS")
    if chosen:
        return [c.strip() for c in chosen.split(",") if c.strip()]
    count = int(os.environ.get("LAB_CHAPTER_COUNT", 2))
    ranked = sorted((p for p in chapter_sources() if widget_score(p)), key=lambda p: -widget_score(p))
    return [p.stem for p in ranked[:count]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digest(paths: list[Path]) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    """A JupyterLab server on loopback; yields its base URL (token included as ?token=...)."""
    missing = [c for c in lab_chapters() if not (CHAPTERS_DIR / f"{c}.ipynb").exists()]
    if missing:
        pytest.fail(f"notebooks not generated: {missing}; run `make notebooks` (jupytext --sync chapters/*.py)")
    port, token = free_port(), secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="lab-test-") as tmp:
        settings = Path(tmp) / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        env = dict(os.environ, COURSE_PROFILE="quick", JUPYTERLAB_SETTINGS_DIR=str(settings),
                   JUPYTERLAB_WORKSPACES_DIR=str(Path(tmp) / "workspaces"), COURSE_CHECKPOINTS=str(Path(tmp) / "ckpt"),
                   COURSE_RESULTS=str(Path(tmp) / "results"), JUPYTER_RUNTIME_DIR=str(Path(tmp) / "runtime"),
                   PYDEVD_DISABLE_FILE_VALIDATION="1")
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                   f"--ServerApp.root_dir={CHAPTERS_DIR.parent}", f"--IdentityProvider.token={token}",
                   "--ServerApp.port_retries=0", "--LabApp.news_url=None",
                   "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if os.geteuid() == 0:
            command.append("--allow-root")
        log = open(Path(tmp) / "lab.log", "w")  # noqa: SIM115
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("JupyterLab did not start:\n" + (Path(tmp) / "lab.log").read_text()[-3000:])
                time.sleep(1)
            yield f"{base}|{token}"
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()


# Each code cell's prompt ("[3]:", "[*]:" while queued or running, "[ ]:" never run); None where the input is
# hidden (a collapsed solution shows no prompt).
PROMPTS = """() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')].map(cell => {
  const prompt = cell.querySelector('.jp-InputArea-prompt');
  return prompt ? prompt.textContent.trim() : null;
})"""

# The first slider (or drop-down) in an output area that also holds what the kernel draws for it: preferably a
# figure in an Output widget (lib.widgets.Explorer), else text in an Output or Label. Marks both for the test.
FIND_CONTROL = """() => {
  const outputs = [...document.querySelectorAll('.jp-Notebook .jp-Cell-outputArea')];
  for (const drawn of ['.widget-output img', '.widget-output pre, .widget-output img, .widget-label, .widget-html']) {
    for (const area of outputs) {
      const controls = [...area.querySelectorAll('.widget-slider'), ...area.querySelectorAll('.widget-dropdown')]
        .filter(c => !c.closest('.widget-output'));
      if (!controls.length || !area.querySelector(drawn)) continue;
      controls[0].setAttribute('data-test-control', '1');
      area.setAttribute('data-test-area', '1');
      return true;
    }
  }
  return false;
}"""

SIGNATURE = """() => {
  const area = document.querySelector('[data-test-area]');
  const control = area.querySelector('[data-test-control]');
  const parts = [];
  area.querySelectorAll('img').forEach(img => parts.push(img.src.length + ':' + img.src.slice(-200)));
  area.querySelectorAll('.widget-output, .widget-label, .widget-html').forEach(e => {
    if (!control.contains(e) && !e.contains(control)) parts.push(e.innerText);
  });
  return parts.join('|');
}"""


def slider_state(control) -> str:
    """Where a slider's handle is and what its readout says."""
    origin = control.locator(".noUi-origin").first.get_attribute("style") or ""
    return f"{control.locator('.widget-readout').first.inner_text()} ({origin})"


def shut_down_kernels(lab: str, path: str) -> None:
    """Stop the kernel of the notebook at `path`, so the next chapter has the CPU to itself."""
    base, token = lab.split("|")
    headers = {"Authorization": f"token {token}"}
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/sessions", headers=headers)) as reply:
        sessions = json.load(reply)
    for session in sessions:
        if session.get("path") == path:
            request = urllib.request.Request(f"{base}/api/sessions/{session['id']}", method="DELETE", headers=headers)
            urllib.request.urlopen(request).close()


def kernel_idle(page) -> bool:
    """The status bar reads "Python 3 (ipykernel) | Idle" once the kernel has started and is not running code."""
    status = page.locator("#jp-main-statusbar").inner_text()
    return "| Idle" in status and "No Kernel" not in status


@pytest.mark.parametrize("chapter", lab_chapters())
def test_chapter_in_jupyterlab(browser, lab, chapter):
    base, token = lab.split("|")
    folder = CHAPTERS_DIR.name
    sources = sorted(CHAPTERS_DIR.glob("*.py"))
    before = digest(sources)
    watch = PageWatch()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    watch.attach(context)
    page = context.new_page()
    watch.watch(page)
    try:
        page.goto(f"{base}/lab/workspaces/test-{chapter}/tree/{folder}/{chapter}.ipynb?reset&token={token}")
        notebook = page.locator(".jp-NotebookPanel").first
        notebook.wait_for(timeout=120_000)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        # the kernel starts on its own (the notebook names an installed kernel): no kernel picker, no dialog
        deadline = time.monotonic() + 120
        while not kernel_idle(page):
            dialogs = page.locator(".jp-Dialog")
            assert not dialogs.count(), f"a dialog blocks the notebook on open: {dialogs.first.inner_text()[:300]}"
            assert time.monotonic() < deadline, "the kernel did not become idle within 2 minutes of opening"
            time.sleep(1)
        assert page.locator(".jp-Dialog").count() == 0, "a dialog blocks the notebook on open"
        page.screenshot(path=screenshot_path("lab", f"{chapter}-opened"))

        # Run ▸ Run All Cells, through the menu as a learner would
        page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        started, settled = time.monotonic(), 0
        while settled < 2:  # idle with nothing queued, seen twice in a row (not the gap between two cells)
            time.sleep(2)
            prompts = page.evaluate(PROMPTS)
            settled = settled + 1 if kernel_idle(page) and not any("*" in (p or "") for p in prompts) else 0
            assert time.monotonic() - started < RUN_ALL_TIMEOUT_S, f"Run All took over {RUN_ALL_TIMEOUT_S:.0f} s"
        seconds = time.monotonic() - started
        outputs = page.locator(".jp-Notebook .jp-OutputArea-output")
        errors = [t for t in outputs.all_inner_texts() if "Traceback (most recent call last)" in t]
        assert not errors, "a cell raised an error:\n" + errors[0][-2000:]
        unrun = [i for i, p in enumerate(prompts) if p is not None and not re.search(r"\[\d+\]", p)]
        assert not unrun, f"Run All stopped early: code cells {unrun} were not run"
        assert page.get_by_text(re.compile(r"profile=quick")).count() >= 1, "the kernel did not run in quick profile"
        print(f"{chapter}: Run All finished in {seconds:.0f} s, {len(prompts)} code cells")

        # move a widget control with the keyboard; the kernel's redraw must reach the page
        assert page.evaluate(FIND_CONTROL), "no slider or drop-down next to kernel-drawn output in this chapter"
        control = page.locator("[data-test-control]")
        control.scroll_into_view_if_needed()
        area = page.locator("[data-test-area]")
        before_signature = page.evaluate(SIGNATURE)
        if control.locator(".noUi-handle").count():
            handle = control.locator(".noUi-handle").first
            old_value = slider_state(control)
            handle.focus()
            page.keyboard.press("ArrowRight")
            if slider_state(control) == old_value:  # already at the maximum
                page.keyboard.press("ArrowLeft")
            moved = slider_state(control)
            assert moved != old_value, "the slider did not move with the keyboard"
        else:
            select = control.locator("select").first  # a drop-down only when the output has no slider
            old_value = select.input_value()
            options = select.locator("option").all_inner_texts()
            select.select_option(label=next(o for o in options if o != old_value))
            moved = select.input_value()
        page.wait_for_function(f"() => ({SIGNATURE})() !== {json.dumps(before_signature)}", timeout=120_000)
        page.wait_for_timeout(500)
        area.screenshot(path=screenshot_path("lab", f"{chapter}-widget"))
        page.screenshot(path=screenshot_path("lab", chapter))
        print(f"{chapter}: control moved {old_value.split(' (')[0]} -> {moved.split(' (')[0]}; the kernel redrew it")
        assert page.locator(".jp-Dialog").count() == 0
        watch.check(allow_failed=("net::ERR_ABORTED",))
    finally:
        context.close()
        shut_down_kernels(lab, f"{folder}/{chapter}.ipynb")
    assert digest(sources) == before, "the chapter sources changed during the test"
