# Safehold's developer entry points. Every target installs what it needs first,
# so each works on a fresh machine. Slow builds are cached outside the checkout.
SHELL := /bin/bash
export SAFEHOLD_CACHE ?= $(HOME)/.cache/safehold
VENV  := .venv
PY    := $(VENV)/bin/python
ARGS  ?=

.PHONY: all deps venv lint crds lock audit test e2e cluster quickstart dr-drill bench bench-operator clean

all: test

# System packages (Debian) and the npm-installed Azurite, into $(SAFEHOLD_CACHE).
deps:
	@e2e/install-deps

# The Python environment: safehold with every extra and the dev tools. The packages the
# image ships come at the versions requirements.lock pins (its hashes dropped: an editable
# install cannot be hashed), so the tests run what the image runs, and a new upstream
# release changes nothing until `make lock` takes it in.
venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@sed -E -e '/^ *(#|--hash|$$)/d' -e 's/ *\\$$//' requirements.lock > $(VENV)/constraints.txt
	@$(PY) -m pip install -q -e '.[all,dev]' -c $(VENV)/constraints.txt
	@touch $@

lint: venv
	$(VENV)/bin/ruff check operator tests e2e bench charts
	$(VENV)/bin/ruff format --check operator tests e2e bench charts
	$(VENV)/bin/mypy
	MYPYPATH=e2e $(VENV)/bin/mypy e2e/testground
	$(VENV)/bin/lint-imports
	$(PY) -m safehold.api.crdgen --check
	$(PY) charts/render_dashboard.py --check

# Regenerate the CRDs (crds/, charts/safehold/crds/) and docs/resources.md from the models,
# the Grafana dashboard from charts/render_dashboard.py, then deploy/safehold.yaml (which
# holds the CRDs) from the chart.
crds: venv
	$(PY) -m safehold.api.crdgen
	$(PY) charts/render_dashboard.py
	$(PY) charts/render_manifest.py

# requirements.lock: the image's Python dependencies (pyproject.toml's with the extras the
# Dockerfile installs, plus the build backend), pinned with sha256 hashes for
# `pip install --require-hashes`. Resolved against PyPI alone (no local indexes or wheel
# folders from pip's configuration), with pip-tools in its own cached environment. Existing
# pins are kept; `make lock ARGS=--upgrade` moves every package to its newest version.
LOCK_TOOLS := $(SAFEHOLD_CACHE)/pip-tools
lock:
	@test -x $(LOCK_TOOLS)/bin/pip-compile || \
	  { python3 -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install -q 'pip-tools==7.7.0'; }
	env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
	  CUSTOM_COMPILE_COMMAND="make lock" \
	  $(LOCK_TOOLS)/bin/pip-compile --quiet $(ARGS) --generate-hashes --allow-unsafe \
	  --strip-extras --build-deps-for=wheel --extra=s3 --extra=gcs --extra=azure \
	  --extra=operator --extra=mount --no-emit-index-url \
	  --no-emit-find-links --output-file=requirements.lock pyproject.toml

# The dependency vulnerability scan of requirements.lock (pip-audit, OSV). Says plainly that
# it did not run where the advisory database is unreachable; fails on any known vulnerability.
audit:
	@e2e/audit

# Every test: unit, storage conformance on real servers, engine, test ground, end to end.
# TEST_WORKERS pytest-xdist processes share the tests (worksteal: the long end-to-end tests
# spread out); each starts its own servers and control plane, so tests never share state.
# Most of the suite waits on servers and Jobs, so more workers than cores still pays.
# TEST_WORKERS=0 runs everything in one process (easier to debug).
TEST_WORKERS ?= 3
test: deps venv lint cluster
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(ARGS)

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

# Safehold against restic (and borg) on fresh loop-mounted ext4 file systems: the mixed data set
# locally and on S3 (SeaweedFS), 100,000 small files locally and on S3, then the storage, prune
# and replication benchmarks (docs/performance.md). Runs as root to mount; under 20 minutes at
# scale 1. ARGS="--scale 0.05" for a quick run, ARGS="--only s3" for one part.
bench: deps venv
	$(PY) bench/run.py $(ARGS)

# The operator at 1,000 BackupPolicies on the test ground (docs/performance.md, "Operator at
# scale"): about ten minutes. ARGS="--policies 100" for a quick run.
bench-operator: deps venv cluster
	$(PY) bench/run.py --only operator --operator-args="$(ARGS)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
