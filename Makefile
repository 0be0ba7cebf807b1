# Two commands do all set-up on a fresh Linux machine with Python 3.11:
#   make run    start the dashboard on the real 740-LoRA corpus
#   make test   run the whole test suite
# and `make serve WORKERS=N` serves it with N Streamlit processes behind HAProxy (one per core by default).
# Both are idempotent: they create .venv, install requirements.txt, fetch and verify the
# corpus and build the store only when something is missing or changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-$(shell cat requirements.txt | sha256sum | cut -c1-16)
STORE  := data/carlos.duckdb
PORT   ?= 8501
HOST   ?= 127.0.0.1
WORKERS ?= $(shell nproc)
UV_VERSION := 0.13.10

.PHONY: run serve test setup store corpus browser haproxy worker lint clean-store fuzz screenshots

run: store
	$(PY) -m streamlit run streamlit_app.py --server.headless true \
	  --server.port $(PORT) --server.address $(HOST) --browser.gatherUsageStats false

# WORKERS Streamlit processes on loopback ports behind HAProxy on HOST:PORT (cookie session affinity,
# health checks); Ctrl-C stops all of them (carlos/serving, `python -m carlos serve --help`).
serve: store haproxy
	$(PY) -m carlos --db $(STORE) serve --workers $(WORKERS) --port $(PORT) --host $(HOST)

# Two pytest workers (pytest-xdist), one file per worker at a time: module fixtures (servers, a
# characterized LoRA) are built once; ~8.5 min on 2 cores against ~12.5 min serially. The tests build
# their stores from the verified corpus files themselves, so this fetches them (once, before the two
# workers would race for them) instead of building data/carlos.duckdb and fitting its map (~30 s).
test: corpus browser haproxy lint
	$(PY) -m pytest -q -n 2 --dist loadfile tests

corpus: setup
	$(PY) -m carlos corpus fetch

# A long fuzz of the upload validator: the fuzz tests only, under the "fuzz" hypothesis profile
# (tests/conftest.py): ~205k examples, roughly an hour on 2 idle cores; FUZZ_MAX_EXAMPLES=1000 for ~20k.
FUZZ_MAX_EXAMPLES ?= 10000
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) $(PY) -m pytest -q tests/files/test_fuzz_validator.py --hypothesis-show-statistics

setup: $(STAMP)

# uv installs requirements.txt (~45 s on a fresh machine here, against ~145 s for pip); where this
# workplace's local wheel folders exist, uv takes torch's CUDA wheels from them instead of downloading them.
LOCAL_WHEELS := $(foreach d,/opt/pypi-more/files /opt/pypi/files,$(if $(wildcard $(d)),--find-links $(d)))
$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --python $(PY) --quiet --compile-bytecode $(LOCAL_WHEELS) -r requirements.txt
	@rm -f $(VENV)/.requirements-* && touch $@

# Idempotent: a second import of the same verified file changes nothing.
store: setup
	$(PY) -m carlos --db $(STORE) corpus import

# Headless Chromium (Debian package) and a CJK font for the browser test; poppler-utils for the case-file tests.
browser:
	@(command -v chromium && command -v pdftoppm && fc-list :lang=zh family | grep -q "Noto Sans CJK") >/dev/null 2>&1 \
	  || sh scripts/install-chromium.sh

# Debian's HAProxy for `make serve` and its browser test (tests/test_browser_replicas.py); root or sudo.
haproxy:
	@(command -v haproxy || test -x /usr/sbin/haproxy) >/dev/null 2>&1 || sh scripts/install-haproxy.sh

# The README's screenshots (docs/screenshots/), from a copy of the real store in headless Chromium at 1440 px.
screenshots: store browser
	PYTHONPATH=. $(PY) scripts/screenshots.py

worker: store
	$(PY) -m carlos --db $(STORE) worker

# Every Python file: ruff lint, ruff format (it owns the layout) and the import contracts (.importlinter).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-logo

clean-store:
	rm -f $(STORE) $(STORE).wal $(STORE).lock $(STORE).version $(STORE).changes
