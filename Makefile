# The same targets run locally and in CI.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

VEGETA := $(BIN)/vegeta
VEGETA_VERSION := v12.13.0

# Renders the Kubernetes overlays of docker/ in the tests (docker/k8s-operator).
KUSTOMIZE := $(BIN)/kustomize
KUSTOMIZE_VERSION := v5.8.1

# Prometheus and promtool (Debian's package) for the metrics tests; never started as a service.
PROMETHEUS := /usr/bin/prometheus

.PHONY: install prometheus demo up down status test unit lint bench bench-quick chaos clean containers-tools images

# A virtual environment with the project and its pinned dependencies (re-run when pyproject changes).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(PROMETHEUS):
	sh deploy/prometheus/install-debian.sh

prometheus: $(PROMETHEUS)

demo: install
	$(BIN)/rendezvous demo

# The open-loop load generator of the benchmarks, compiled from the Go module proxy.
$(VEGETA):
	GOBIN=$(abspath $(BIN)) go install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)

$(KUSTOMIZE):
	GOBIN=$(abspath $(BIN)) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

# podman, runc and mmdebstrap from Debian, for the container images of docker/ (podman-compose
# comes with the dev dependencies); apt-get runs only when one of them is missing.
CONTAINER_TOOLS := podman runc mmdebstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

containers-tools:
	@missing=""; for tool in $(CONTAINER_TOOLS); do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing from Debian"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The container images (docker/README.md); IMAGE_FLAGS= builds on the official base images.
IMAGE_FLAGS ?= --local
images: containers-tools
	bash docker/build.sh $(IMAGE_FLAGS)

bench: install $(VEGETA)
	$(BIN)/python -m bench.latency

bench-quick: install $(VEGETA)
	$(BIN)/python -m bench.latency --quick

# Faults at load (TaskManager, broker, proxy), audited against the archive.
chaos: install $(VEGETA)
	$(BIN)/python -m bench.chaos

up: install
	$(BIN)/rendezvous up

down: install
	$(BIN)/rendezvous down

status: install
	$(BIN)/rendezvous status

test: install $(VEGETA) $(KUSTOMIZE) $(PROMETHEUS) containers-tools
	$(BIN)/python -m pytest

unit: install $(VEGETA) $(KUSTOMIZE)
	$(BIN)/python -m pytest -m unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	-$(BIN)/rendezvous down
	rm -rf $(VENV) .state
