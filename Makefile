# Safehold's developer entry points. Every target installs what it needs first,
# so each works on a fresh machine. Slow builds are cached outside the checkout.
SHELL := /bin/bash
export SAFEHOLD_CACHE ?= $(HOME)/.cache/safehold
VENV  := .venv
PY    := $(VENV)/bin/python
ARGS  ?=

.PHONY: all deps venv lint crds test e2e cluster quickstart dr-drill bench clean

all: test

# System packages (Debian) and the npm-installed Azurite, into $(SAFEHOLD_CACHE).
deps:
	@e2e/install-deps

# The Python environment: safehold with every extra and the dev tools.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[all,dev]'
	@touch $@

lint: venv
	$(VENV)/bin/ruff check operator tests e2e bench charts
	$(VENV)/bin/ruff format --check operator tests e2e bench charts
	$(VENV)/bin/mypy
	MYPYPATH=e2e $(VENV)/bin/mypy e2e/testground
	$(VENV)/bin/lint-imports
	$(PY) -m safehold.api.crdgen --check

# Regenerate the CRDs (crds/, charts/safehold/crds/) and docs/resources.md from the models,
# then deploy/safehold.yaml (which holds the CRDs) from the chart.
crds: venv
	$(PY) -m safehold.api.crdgen
	$(PY) charts/render_manifest.py

# Every test: unit, storage conformance on real servers, engine, test ground, end to end.
test: deps venv lint cluster
	$(PY) -m pytest $(ARGS)

# The Kubernetes test ground's control plane, built from Debian's source package once and
# cached in $(SAFEHOLD_CACHE): minutes the first time, instant afterwards. Built here, before
# pytest, so the build never runs inside a test's timeout. Skipped when KUBECONFIG names a cluster.
cluster: deps venv
	@if [ -z "$${KUBECONFIG:-}" ]; then e2e/cluster build; fi

# The end-to-end tests on the local Kubernetes test ground only.
e2e: deps venv cluster
	$(PY) -m pytest e2e/tests $(ARGS)

quickstart: deps venv cluster
	@$(PY) e2e/quickstart.py $(ARGS)

# The disaster-recovery drill of docs/disaster-recovery.md: two clusters side by side, a primary
# on S3 and recovery sites on GCS and Azure, the primary lost, everything restored in the
# second cluster; prints RPO and RTO. About five minutes once the control plane is built.
dr-drill: deps venv cluster
	@$(PY) e2e/dr_drill.py $(ARGS)

bench: deps venv
	$(PY) bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
