# The rendered course and the real-browser tests, included by the Makefile:
#   make book           the static site of every chapter, executed (COURSE_PROFILE, default standard), offline
#   make test-standard  every chapter executed in the standard profile (with its quality bars), as the site build
#   make test-browser   the site (SITE_PROFILE, default quick) and JupyterLab, checked in Chromium
BOOK_STAMP := $(VENV)/.book-installed
BOOK_PROFILE ?= $(or $(COURSE_PROFILE),standard)
# Notebooks executed one after another: with sphinx -j 2 a forked worker's notebook client was seen to hang
# waiting for a kernel that sat idle (myst-nb 1.4, Python 3.11), so parallel execution is opt-in.
BOOK_JOBS ?= 1
# The site the browser tests check: CI passes SITE_PROFILE=standard to reuse the standard build of test-standard.
SITE_PROFILE ?= quick
SITE_DIR = _build/$(if $(filter standard,$(SITE_PROFILE)),book,book-$(SITE_PROFILE))/html
CHROMIUM ?= /usr/bin/chromium
APT_GET = DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo -n) apt-get

.PHONY: book book-deps browser-deps test-browser test-standard

$(BOOK_STAMP): $(STAMP) requirements-book.txt
	$(BIN)/python -m pip install -r requirements-book.txt
	touch $(BOOK_STAMP)

# npm fetches MathJax and the widget bundle (once, into _build/vendor/); Node.js is on most machines already.
book-deps: $(BOOK_STAMP)
	@command -v npm >/dev/null || { echo "npm not found: installing it with apt-get (needed once, to fetch MathJax and the widget bundle)"; \
		$(APT_GET) update -q && $(APT_GET) install -y -q --no-install-recommends npm; } || { \
		echo "Could not install npm. Install Node.js and npm (Debian/Ubuntu: sudo apt-get install npm), then run make again."; exit 1; }

book: book-deps
	$(BIN)/python book/build.py --profile $(BOOK_PROFILE) --jobs $(BOOK_JOBS)

# Where the quality bars live: every chapter in the standard profile, each assert cell enforced (a cell error
# fails the build and names the chapter); prints each chapter's results record and time.
test-standard: book-deps
	@start=$$(date +%s); \
	$(BIN)/python book/build.py --profile standard --jobs $(BOOK_JOBS) && \
	COURSE_RESULTS=_build/book/results $(BIN)/python -m lib.results; status=$$?; \
	echo "test-standard: $$(( $$(date +%s) - start )) s"; exit $$status

# Chromium and its driver from the system package manager; CJK and emoji fonts so screenshots show the pages
# as a reader sees them (the chapters give Chinese terms).
browser-deps: book-deps
	@need=""; [ -x "$(CHROMIUM)" ] || need="chromium"; command -v chromedriver >/dev/null || need="$$need chromium-driver"; \
	fonts=""; [ -n "$$(fc-list :lang=zh 2>/dev/null)" ] || fonts="fonts-wqy-microhei fonts-noto-color-emoji"; \
	if [ -n "$$need$$fonts" ]; then echo "Installing with apt-get:$$need $$fonts"; $(APT_GET) update -q || true; fi; \
	if [ -n "$$need" ] && ! $(APT_GET) install -y -q --no-install-recommends $$need; then \
		echo "Could not install Chromium. As root (or with sudo) run: apt-get install chromium chromium-driver,"; \
		echo "or point CHROMIUM=/path/to/chromium at an installed Chromium, then run make test-browser again."; \
		exit 1; fi; \
	if [ -n "$$fonts" ] && ! $(APT_GET) install -y -q --no-install-recommends $$fonts; then \
		echo "warning: no CJK font (apt-get install fonts-wqy-microhei): Chinese text shows as boxes in screenshots"; fi
	@"$(CHROMIUM)" --version

test-browser: browser-deps notebooks
	@start=$$(date +%s); \
	$(BIN)/python book/build.py --profile $(SITE_PROFILE) --jobs $(BOOK_JOBS) && \
	CHROMIUM=$(CHROMIUM) BOOK_SITE=$(SITE_DIR) $(BIN)/python -m pytest browser_tests -v -s -p no:cacheprovider \
		--durations=5; status=$$?; \
	echo "test-browser: $$(( $$(date +%s) - start )) s; screenshots in _build/screenshots/"; exit $$status
