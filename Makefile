# The two commands of the README: `make demo` and `make test`. Both build the virtual
# environment first (./.venv, Python 3.10+), so a fresh machine needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := demo

.PHONY: demo test venv lint clean-demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Synthetic dataset -> shards. Re-running resumes (finished shards are kept).
demo: venv
	$(PY) tools/make_synthetic.py $(DEMO)/synthetic
	$(PY) tools/make_shards.py $(DEMO)/synthetic --out shards/synthetic --workers 2

# Installs what tests need (venv, the opencv-doc sample videos when reachable), then the suite.
test: venv
	bash tools/fetch_test_videos.sh tests/.cache/opencv-doc || true
	$(PY) -m ruff check .
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO) shards/synthetic
