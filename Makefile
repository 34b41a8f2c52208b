# The two commands of the README: `make demo` and `make test`. Both build the virtual
# environment first (./.venv, Python 3.10+), so a fresh machine needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := demo

.PHONY: demo test venv clean-demo gpu-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The whole path on a CPU: synthetic clips -> shards -> train (tiny VideoMAE, DALI loader, one
# model per observation ratio) -> evaluate (3 crops; no flips: the classes are mirror pairs) ->
# predict. Re-running resumes every step (finished shards, ratios and epochs are kept).
RUN := $(DEMO)/runs/demo
demo: venv
	$(PY) tools/make_synthetic.py $(DEMO)/synthetic --train-per-class 160 --val-per-class 10 --test-per-class 10 --duration 2 4
	$(PY) tools/make_synthetic.py $(DEMO)/unlabeled --layout unlabeled --test-per-class 4 --seed 1 --duration 2 4
	@# A regenerated set (new generator version or options) keeps its clip ids: drop the shards
	@# and runs made from the old one, which make_shards and train would otherwise resume.
	@if [ shards/synthetic/manifest.json -ot $(DEMO)/synthetic/.make_synthetic.json ]; then rm -rf shards/synthetic $(RUN); fi
	@if [ shards/synthetic-unlabeled/manifest.json -ot $(DEMO)/unlabeled/.make_synthetic.json ]; then rm -rf shards/synthetic-unlabeled; fi
	$(PY) tools/make_shards.py $(DEMO)/synthetic --out shards/synthetic
	$(PY) tools/make_shards.py $(DEMO)/unlabeled --out shards/synthetic-unlabeled
	$(PY) -m vidact.preview --shards shards/synthetic --split train --out $(DEMO)/preview.png
	$(PY) -m vidact.train --recipe demo --shards shards/synthetic --loader dali --out $(RUN)
	$(PY) -m vidact.evaluate --ckpt $(RUN)/ratio_0.9/best.pt --shards shards/synthetic --split test --views 3 --out $(RUN)/eval
	$(PY) -m vidact.predict --ckpt $(RUN)/ratio_0.9/best.pt --shards shards/synthetic-unlabeled --views 3 --out $(DEMO)/submission.csv
	@echo "demo: accuracy vs observation ratio: $(RUN)/accuracy_vs_ratio.png; curves: $(RUN)/ratio_*/curves.png;"
	@echo "      test report: $(RUN)/eval/; submission: $(DEMO)/submission.csv; loader preview: $(DEMO)/preview.png"

# Installs what tests need (venv, the opencv-doc sample videos when reachable, the ffmpeg CLI for
# the Ogg/Theora source test when apt can get it), then the suite.
test: venv
	bash tools/fetch_test_videos.sh tests/.cache/opencv-doc || true
	command -v ffmpeg >/dev/null || (command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq ffmpeg)) || true
	$(PY) -m ruff check .
	@# Two test processes, each module's tests in one of them (its fixtures built once): half the
	@# suite's time is spent waiting on subprocesses, servers and timeouts (13.7 -> 9.5 min measured).
	$(PY) -m pytest -q -n 2 --dist loadscope

# On a CUDA machine: the GPU-marked tests and the GPU measurements (gpu-evidence/evidence.json),
# one PASS/FAIL line per check. No venv needed: the venv's Python when there is one, else
# $(PYTHON) with the dependencies installed (a bare CUDA box); it names what is missing.
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) tools/gpu_check.py

clean-demo:
	rm -rf $(DEMO) shards/synthetic shards/synthetic-unlabeled
