# One-command set-up, test, demo and benchmarks. Every target is idempotent and works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.edgeprune-installed
BENCH ?= all

.PHONY: setup dev-deps remote-test-env test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import edgeprune, torch, torch_pruning, onnxruntime"
	touch $(STAMP)

setup: $(STAMP)

# System packages the tests need (OpenSSH server for the remote-profiling tests, Chromium for the report test).
dev-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  test -x /usr/sbin/sshd || missing="$$missing openssh-server"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root or no apt-get: install openssh-server and chromium yourself for the full suite"; fi

# A torch-free Python with onnxruntime for the SSH tests' "device" (cached under ~/.cache/edgeprune).
remote-test-env: setup
	$(PY) tests/sshd_fixture.py

test: setup dev-deps remote-test-env
	$(VENV)/bin/ruff check edgeprune profilers tests bench
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check edgeprune profilers tests bench

demo: setup
	$(VENV)/bin/edgeprune demo --force

bench: setup
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
