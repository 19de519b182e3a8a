"""Build the course site: every chapters/NN_topic.py, executed, as static HTML (Sphinx + myst-nb).

    python book/build.py [--profile quick|standard|full] [--out DIR] [--jobs N]

Steps, each skipped when its result is already up to date:
1. vendor: fetch MathJax and the Jupyter widgets embed bundle from the npm registry (pinned versions, SHA-512
   checked) into `_build/vendor/static/`; the site serves them itself, so it needs no CDN when read.
2. stage: convert each chapter to a notebook under `_build/book-src/<profile>/chapters/` (a clean copy for the
   "download notebook" link, and the page copy with that link added), and write the landing page with the
   course map read from the chapters themselves (title, goals, time per profile), and copy GLOSSARY.md (the
   bilingual glossary that book/glossary.py writes) in as the glossary page.
3. sphinx-build: myst-nb executes the notebooks in the chosen profile with an execution cache per profile
   (`.jupyter_cache/<profile>/`), so an unchanged chapter is not re-run; any cell error fails the build.
   When `lib/` or `requirements.txt` change, the cache for that profile is cleared (outputs would be stale).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
VENDOR = ROOT / "_build" / "vendor"
PROFILES = ("quick", "standard", "full")

# npm packages the site serves from _static/ (name, version, registry integrity, files to copy: source -> target).
NPM_PACKAGES = [
    {
        "name": "mathjax",
        "version": "3.2.2",
        "integrity": "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        "copy": {
            "es5/tex-chtml-full.js": "mathjax/tex-chtml-full.js",
            "es5/output/chtml/fonts/woff-v2": "mathjax/output/chtml/fonts/woff-v2",
            "es5/ui": "mathjax/ui",
            "es5/a11y": "mathjax/a11y",
            "LICENSE": "mathjax/LICENSE",
        },
    },
    {
        "name": "@jupyter-widgets/html-manager",
        "version": "1.0.15",
        "integrity": "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        # embed.js renders saved widget state without RequireJS; its icon fonts load from the same folder
        # (woff2/woff/ttf: what current browsers pick; the legacy .eot/.svg copies are left out).
        "copy": {"dist/embed.js": "widgets/embed.js", "dist/embed.js.LICENSE.txt": "widgets/embed.js.LICENSE.txt",
                 "dist/*.woff2": "widgets/", "dist/*.woff": "widgets/", "dist/*.ttf": "widgets/",
                 "LICENSE": "widgets/LICENSE"},
    },
]


def log(message: str) -> None:
    print(f"[book] {message}", flush=True)


# ---------------------------------------------------------------- 1. vendor
def vendor() -> Path:
    """Fetch the pinned npm packages once; return the folder to add to Sphinx's static path."""
    static = VENDOR / "static"
    stamp = VENDOR / "packages.json"
    wanted = json.dumps(NPM_PACKAGES, sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted and static.is_dir():
        return static
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("[book] npm is needed once to fetch MathJax and the widget bundle from the npm registry.\n"
                 "       Install Node.js and npm (Debian/Ubuntu: sudo apt-get install -y npm), then run again.")
    shutil.rmtree(VENDOR, ignore_errors=True)
    static.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        for package in NPM_PACKAGES:
            spec = f"{package['name']}@{package['version']}"
            log(f"fetching {spec} from the npm registry")
            result = subprocess.run([npm, "pack", spec, "--json", "--pack-destination", tmp],
                                    capture_output=True, text=True, cwd=tmp)
            if result.returncode != 0:
                sys.exit(f"[book] npm pack {spec} failed (is the npm registry reachable?):\n{result.stderr}")
            filename = json.loads(result.stdout)[0]["filename"]
            tarball = Path(tmp) / filename.replace("@", "").replace("/", "-")
            if not tarball.exists():
                tarball = next(Path(tmp).glob("*.tgz"))
            digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
            if digest != package["integrity"]:
                sys.exit(f"[book] {spec}: SHA-512 mismatch ({digest} != {package['integrity']}); not using it.")
            unpacked = Path(tmp) / "unpacked"
            shutil.rmtree(unpacked, ignore_errors=True)
            with tarfile.open(tarball) as archive:
                archive.extractall(unpacked, filter="data")
            tarball.unlink()
            source_root = unpacked / "package"
            for source, target in package["copy"].items():
                destination = static / target
                for found in sorted(source_root.glob(source)):
                    place = destination / found.name if target.endswith("/") else destination
                    place.parent.mkdir(parents=True, exist_ok=True)
                    if found.is_dir():
                        shutil.copytree(found, place)
                    else:
                        shutil.copy2(found, place)
    stamp.write_text(wanted)
    return static


# ---------------------------------------------------------------- 2. stage
def chapter_sources() -> list[Path]:
    """Every chapters/NN_topic.py (BOOK_CHAPTERS, a folder, overrides it for trying the pipeline out)."""
    folder = Path(os.environ.get("BOOK_CHAPTERS") or ROOT / "chapters")
    return sorted(p for p in folder.glob("*.py") if re.fullmatch(r"\d\d_\w+\.py", p.name))


def write_if_changed(path: Path, text: str) -> bool:
    """Write only when the content differs, so Sphinx's incremental build sees unchanged files as unchanged."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def describe(notebook: nbformat.NotebookNode, stem: str) -> dict:
    """Title, goals and time per profile, read from the chapter's first markdown cell."""
    first = next((c.source for c in notebook.cells if c.cell_type == "markdown"), "")
    title = next((line[2:].strip() for line in first.splitlines() if line.startswith("# ")), stem)
    goals: list[str] = []
    lines = first.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"\*\*Goals", line)), None)
    if start is not None:
        for line in lines[start + 1:]:
            if re.match(r"\s*\d+\.\s", line):
                goals.append(re.sub(r"^\s*\d+\.\s+", "", line).strip())
            elif line.strip() and goals and line.startswith(" "):
                goals[-1] += " " + line.strip()
            elif goals or line.strip():
                break
    if not goals:  # fall back to the first paragraph after the title
        paragraph = first.split("\n\n")[1] if "\n\n" in first else ""
        goals = [" ".join(paragraph.split())] if paragraph else []
    times = {p: "–" for p in PROFILES}
    found = re.search(r"\*\*Time:\*\*\s*(.+)", first)
    if found:
        text = found.group(1).strip().rstrip(".")
        parts = [part.strip() for part in re.split(r"\s+·\s+", text)]
        matched = False
        for part in parts:
            name = re.match(r"(quick|standard|full)\b\s*(.*)", part)
            if name:
                times[name.group(1)] = name.group(2).strip() or part
                matched = True
        if not matched:
            times = {p: text for p in PROFILES}
    return {"stem": stem, "title": title, "goals": goals, "times": times}


def course_map(chapters: list[dict]) -> str:
    """The landing page's course map as a MyST list-table: chapter, what it teaches, time per profile."""
    rows = ["```{list-table}", ":header-rows: 1", ":widths: 24 56 20", ":class: course-map", "",
            "* - Chapter", "  - What it teaches", "  - Time per profile"]
    for chapter in chapters:
        rows.append(f"* - {{doc}}`{chapter['title']} <chapters/{chapter['stem']}>`")
        goals = chapter["goals"] or ["–"]
        rows.append(f"  - 1. {goals[0]}" if len(goals) > 1 else f"  - {goals[0]}")
        rows += [f"    {i}. {goal}" for i, goal in enumerate(goals[1:], start=2)]
        times = chapter["times"]
        if len(set(times.values())) == 1:  # one statement for every profile
            rows.append(f"  - **{' · '.join(PROFILES)}** {times[PROFILES[0]]}")
        else:
            rows.append(f"  - **{PROFILES[0]}** {times[PROFILES[0]]}")
            rows += [f"\n    **{p}** {times[p]}" for p in PROFILES[1:]]
    rows.append("```")
    return "\n".join(rows)


def add_download_link(notebook: nbformat.NotebookNode, stem: str) -> None:
    """Put the chapter's download links right under its title (page copy only; the download stays clean)."""
    links = (f"{{download}}`Download this chapter as a notebook (.ipynb) <../downloads/{stem}.ipynb>` · "
             f"{{download}}`its Jupytext source (.py) <../downloads/{stem}.py>` · run it in JupyterLab with "
             "`make lab`.")
    first = next((c for c in notebook.cells if c.cell_type == "markdown"), None)
    if first is not None and re.search(r"^# ", first.source, flags=re.M):
        first.source = re.sub(r"^(# .*)$", lambda m: f"{m.group(1)}\n\n{links}", first.source, count=1, flags=re.M)
    else:
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(links, id=f"download-{stem}".replace("_", "-")))


def stage(srcdir: Path, profile: str) -> list[dict]:
    """Write the Sphinx source tree for this profile; return the chapters' descriptions."""
    sources = chapter_sources()
    if not sources:
        sys.exit(f"[book] no chapters found (chapters/[0-9][0-9]_*.py under {ROOT})")
    chapters = []
    keep = set()
    for source in sources:
        notebook = jupytext.read(source)
        stem = source.stem
        for i, cell in enumerate(notebook.cells):  # stable cell ids: unchanged chapters give unchanged files
            cell.id = hashlib.sha1(f"{i}\0{cell.source}".encode()).hexdigest()[:12]
        clean = jupytext.writes(notebook, fmt="ipynb")
        write_if_changed(srcdir / "downloads" / f"{stem}.ipynb", clean)
        write_if_changed(srcdir / "downloads" / f"{stem}.py", source.read_text(encoding="utf-8"))
        chapters.append(describe(notebook, stem))
        add_download_link(notebook, stem)
        write_if_changed(srcdir / "chapters" / f"{stem}.ipynb", jupytext.writes(notebook, fmt="ipynb"))
        keep |= {f"chapters/{stem}.ipynb", f"downloads/{stem}.ipynb", f"downloads/{stem}.py"}
    for folder in ("chapters", "downloads"):  # chapters that were removed since the last build
        for old in (srcdir / folder).glob("*"):
            if f"{folder}/{old.name}" not in keep and old.is_file():
                old.unlink()
    template = (BOOK / "index.md").read_text(encoding="utf-8")
    index = template.replace("{{ course_map }}", course_map(chapters)).replace("{{ profile }}", profile)
    write_if_changed(srcdir / "index.md", index)
    glossary = ROOT / "GLOSSARY.md"  # written by book/glossary.py; its chapter links become links to the pages
    if glossary.exists():
        text = re.sub(r"\]\((chapters/\d\d_\w+)\.py\)", r"](\1.ipynb)", glossary.read_text(encoding="utf-8"))
        write_if_changed(srcdir / "glossary.md", text)
    return chapters


# ---------------------------------------------------------------- 3. build
def fingerprint() -> str:
    """What executed outputs depend on besides the notebook's own code: lib/ and the pinned packages."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "lib").rglob("*.py")) + [ROOT / "requirements.txt"]:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def run_sphinx(command: list[str], env: dict[str, str]) -> tuple[int, Path | None]:
    """Run sphinx-build, passing its output through; return its exit code and the crash log it names, if any."""
    error_log, saw_marker = None, False
    with subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as process:
        for line in process.stdout:
            if "Kernel is running over TCP without encryption" in line:
                continue  # ipykernel's notice, once per notebook; the kernels only listen on loopback
            print(line, end="", flush=True)
            if saw_marker and line.strip():
                error_log, saw_marker = Path(line.strip()), False
            saw_marker = saw_marker or "The full traceback has been saved in" in line
    return process.returncode, error_log


def report_cell_error(error_log: Path | None) -> None:
    """Print the failing cell and its traceback from Sphinx's crash log (a parallel build only saves it there)."""
    if error_log is None or not error_log.exists():
        return
    text = re.sub(r"\x1b\[[0-9;]*m", "", error_log.read_text(errors="replace"))
    notebook = re.findall(r"ExecutionError: (\S+\.ipynb)", text)
    found = re.search(r"An error occurred while executing the following cell:(.*?)"
                      r"(The above exception was the direct cause|\Z)", text, flags=re.S)
    if found:
        where = Path(notebook[-1]).stem if notebook else "a chapter"
        print(f"\n[book] a cell failed in {where} (fix it in chapters/{where}.py):{found.group(1).rstrip()}\n",
              flush=True)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=os.environ.get("COURSE_PROFILE") or "standard", choices=PROFILES)
    parser.add_argument("--out", type=Path, help="output folder (default _build/book for standard, "
                        "_build/book-<profile> otherwise); the site is in OUT/html")
    parser.add_argument("--jobs", default=os.environ.get("BOOK_JOBS", "1"),
                        help="notebooks executed in parallel (sphinx -j; default 1, 'auto' = one per core)")
    args = parser.parse_args()
    started = time.perf_counter()
    out = (args.out or ROOT / "_build" / ("book" if args.profile == "standard" else f"book-{args.profile}")).resolve()
    srcdir = ROOT / "_build" / "book-src" / args.profile
    cache = ROOT / ".jupyter_cache" / args.profile

    static = vendor()
    chapters = stage(srcdir, args.profile)
    log(f"{len(chapters)} chapter(s), profile {args.profile}: " + ", ".join(c["stem"] for c in chapters))

    inputs = fingerprint()
    cache_stamp, env_stamp = cache / "inputs.sha256", out / "inputs.sha256"
    if cache.exists() and (not cache_stamp.exists() or cache_stamp.read_text() != inputs):
        log(f"lib/ or requirements.txt changed since these outputs were cached: clearing {cache}")
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    cache_stamp.write_text(inputs)
    # Sphinx keeps each page's outputs in its environment too: re-read every page when the inputs changed.
    fresh_env = [] if env_stamp.exists() and env_stamp.read_text() == inputs else ["-E"]

    env = dict(os.environ)
    env.update({
        "COURSE_PROFILE": args.profile,
        "BOOK_PROFILE": args.profile,
        "BOOK_VENDOR_STATIC": str(static),
        "BOOK_EXECUTION_CACHE": str(cache),
        "COURSE_RESULTS": str(out / "results"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    })
    if str(args.jobs) != "1":
        env.setdefault("OMP_NUM_THREADS", "1")  # parallel notebooks: one thread each on a small machine
    with tempfile.TemporaryDirectory(prefix="book-checkpoints-") as checkpoints:
        env["COURSE_CHECKPOINTS"] = checkpoints  # train from scratch: what the reader sees is a real run
        command = [sys.executable, "-m", "sphinx", "-b", "html", "-c", str(BOOK), "-d", str(out / "doctrees"),
                   "-j", str(args.jobs), "--keep-going", *fresh_env, str(srcdir), str(out / "html")]
        log(" ".join(command))
        returncode, error_log = run_sphinx(command, env)
    if returncode != 0:
        report_cell_error(error_log)
        sys.exit(f"[book] sphinx-build failed (exit {returncode}); see the messages above.")
    env_stamp.write_text(inputs)
    html = out / "html"
    seconds = time.perf_counter() - started
    log(f"site: {html}/index.html ({folder_size(html) / 2**20:.1f} MiB) built in {seconds:.0f} s")


if __name__ == "__main__":
    main()
