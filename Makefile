# Two commands: `make demo` runs the embedded demo, `make test` runs every check.
# Both create .venv when missing, install fluxd with its test extras, and install the
# pinned helm and kubectl binaries into .venv/bin (deploy/install_tools.py).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench crds clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml deploy/install_tools.py
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python deploy/install_tools.py --bin-dir $(BIN)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m fluxd demo

lint: $(STAMP)
	$(BIN)/ruff check fluxd tests benchmarks deploy
	$(BIN)/mypy
	$(BIN)/lint-imports

# A real Prometheus and promtool for tests/test_prometheus.py, from Debian's packages.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
/usr/bin/prometheus /usr/bin/promtool &:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus

# sshd and ssh for the Git-over-SSH tests, from Debian's packages.
/usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen &:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		openssh-server openssh-client

# The CNCF distribution registry (Debian's docker-registry) for the OCI tests.
/usr/bin/docker-registry:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		docker-registry

# pytest's exit status 5 (no tests collected) fails the target like any other failure.
test: lint /usr/bin/prometheus /usr/bin/promtool /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen \
		/usr/bin/docker-registry
	$(BIN)/python -m pytest $(PYTEST_ARGS)

crds: $(STAMP)
	$(BIN)/python -m fluxd.api.crd --out deploy/crds

bench: $(STAMP)
	$(BIN)/python -m benchmarks.devcluster
	$(BIN)/python -m benchmarks.workqueue
	$(BIN)/python -m benchmarks.runtime
	$(BIN)/python -m benchmarks.artifacts
	$(BIN)/python -m benchmarks.gitrepository
	$(BIN)/python -m benchmarks.kustomization
	$(BIN)/python -m benchmarks.helmrelease
	$(BIN)/python -m benchmarks.notification

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
