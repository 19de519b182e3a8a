"""Sphinx configuration of the course site. Build it with `make book` (book/build.py sets the BOOK_* variables)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROFILE = os.environ.get("BOOK_PROFILE") or os.environ.get("COURSE_PROFILE") or "standard"

project = "AI large models, from the ground up"
author = "the course authors"
copyright = "the course authors"
language = "en"

extensions = ["myst_nb"]
exclude_patterns = ["_build", "downloads", "**.ipynb_checkpoints", "jupyter_execute"]
suppress_warnings = ["mystnb.unknown_mime_type"]

# ---- execution: every chapter runs in the chosen profile; unchanged chapters come from the cache
nb_execution_mode = "cache"
nb_execution_cache_path = os.environ.get("BOOK_EXECUTION_CACHE") or str(ROOT / ".jupyter_cache" / PROFILE)
nb_execution_timeout = 1800  # seconds per cell; a chapter's training cell can take minutes in `full`
nb_execution_raise_on_error = True  # any cell error fails the build
nb_execution_show_tb = True
nb_execution_excludepatterns = []
nb_merge_streams = True

# ---- MyST: the chapters write math as $...$ and $$...$$
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True
myst_heading_anchors = 3
nb_render_markdown_format = "myst"  # Markdown outputs (exercise model answers) get the same math as the text

# ---- assets served by the site itself (fetched from the npm registry by book/build.py): no CDN
html_static_path = ["_static"]
if os.environ.get("BOOK_VENDOR_STATIC"):
    html_static_path.insert(0, os.environ["BOOK_VENDOR_STATIC"])
mathjax_path = "mathjax/tex-chtml-full.js"  # relative to _static/
mathjax3_config = {"tex": {"tags": "none"}, "options": {"menuOptions": {"settings": {"explorer": False}}}}
mathjax_config_path = "mathjax_hub_shim.js"  # widget labels call the MathJax 2 API; map it to MathJax 3
# Saved widget state is rendered by @jupyter-widgets/html-manager's embed.js (no RequireJS, no CDN).
nb_ipywidgets_js = {"widgets/embed.js": {}}

# ---- theme
html_theme = "sphinx_book_theme"
html_title = "AI large models, from the ground up"
html_css_files = ["course.css"]
html_copy_source = True  # the theme's download button offers each page's .ipynb
html_sourcelink_suffix = ""
html_last_updated_fmt = None
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": True,
    "use_fullscreen_button": True,
    "use_repository_button": False,
    "use_issues_button": False,
    "use_edit_page_button": False,
    "navigation_with_keys": False,
    "extra_footer": f"Executed in the <code>{PROFILE}</code> profile. Built offline from <code>chapters/*.py</code>.",
}
html_context = {"default_mode": "light"}
