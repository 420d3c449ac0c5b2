# EdgeGen. `make run` optimizes the default model and serves it here; `make test` runs the suite.
# Every target that needs Python creates .venv itself; it is re-synced only when the dependency
# files change.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  ?= serve,optimize,report,deploy,test

RECIPE  ?= recipes/dcgan-digits-quick.yaml
BUNDLE  ?= bundles/dcgan-digits
BUNDLES ?= $(BUNDLE)
HOST    ?= 127.0.0.1
PORT    ?= 8080
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv run optimize bundle serve status images deploy bench report targets monitor monitor-down test test-fast wheelhouse image-optimizer bench-images bench-text bench-llama-export bench-serving bench-load apk clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	    -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $@

venv: $(STAMP) ## create or update .venv

# The bundle is rebuilt only when its recipe changes; a second `make run` reuses it.
$(BUNDLE)/manifest.json: $(RECIPE) | $(STAMP)
	$(BIN)/python -m optimizer run $(RECIPE) --out $(BUNDLE)

bundle: $(BUNDLE)/manifest.json ## build the default bundle if missing or stale

run: $(BUNDLE)/manifest.json ## optimize the default model (once) and serve it on $(HOST):$(PORT)
	$(BIN)/python -m edge_app serve $(addprefix --bundle ,$(BUNDLE)) --host $(HOST) --port $(PORT)

optimize: $(STAMP) ## run a recipe: make optimize RECIPE=recipes/....yaml
	$(BIN)/python -m optimizer run $(RECIPE)

serve: $(STAMP) ## serve chosen bundles: make serve BUNDLES="bundles/a bundles/b"
	$(BIN)/python -m edge_app serve $(addprefix --bundle ,$(BUNDLES)) --host $(HOST) --port $(PORT)

# The fleet's inventory: no default (fleet commands refuse without one, in one line), so that no
# device is probed by surprise; make one from ansible/inventory/example.yml.
INVENTORY ?=
INV = $(if $(INVENTORY),--inventory $(INVENTORY))
status: $(STAMP) ## probe every device of an inventory: make status INVENTORY=... [LIMIT=host,class]
	$(BIN)/python -m fleet status $(INV) $(if $(LIMIT),--limit $(LIMIT))

# Fleet rollout. Images: one per class (edgegen-edge:<version>-<class>-<arch>), built from a
# host-side wheelhouse and saved for devices that have no registry.
images: $(STAMP) ## build and save the edge server image: make images DEVICE=pi|jetson|local
	$(BIN)/python -m fleet images --device $(DEVICE) $(INV)

deploy: $(STAMP) $(BUNDLE)/manifest.json ## roll out to a class: make deploy DEVICE=pi [INVENTORY=...] [LIMIT=host,...]
	$(BIN)/python -m fleet deploy --device $(DEVICE) $(INV) $(if $(LIMIT),--limit $(LIMIT)) $(DEPLOY_ARGS)

# Device benchmark (the paper's method): every bundle x 3 repeats, each in a fresh process,
# with the idle baseline and a 60 s power window where a sensor exists. Resumable.
# DEVICE=local measures this machine; DEVICE=<class>|all measures the devices of INVENTORY
# inside their deployed containers (Ansible) and fetches the results.
DEVICE ?= local
BENCH_BUNDLES ?= $(patsubst %/manifest.json,%,$(wildcard bundles/*/manifest.json))
RESULTS ?= results
BENCH_ARGS ?=
bench: $(STAMP) ## measure bundles: make bench DEVICE=local|<class>|all [INVENTORY=...] [LIMIT=...] [BENCH_ARGS=...]
ifeq ($(DEVICE),local)
	$(BIN)/python -m edge_app bench $(addprefix --bundle ,$(BENCH_BUNDLES)) --device $(DEVICE) \
	    --out $(RESULTS)/bench $(BENCH_ARGS)
	$(BIN)/python -m fleet measured --results $(RESULTS)/bench --bundles bundles
else
	$(BIN)/python -m fleet bench --device $(DEVICE) $(INV) \
	    --results $(RESULTS)/bench $(if $(LIMIT),--limit $(LIMIT)) \
	    $(if $(filter command line environment,$(origin BENCH_BUNDLES)),$(addprefix --bundle ,$(notdir $(BENCH_BUNDLES)))) \
	    $(BENCH_ARGS)
endif

report: $(STAMP) ## the paper's tables, figures and one HTML page from $(RESULTS)/bench
	$(BIN)/python -m fleet report --results $(RESULTS)/bench --out $(RESULTS)/report

targets: $(STAMP) ## write Prometheus targets for INVENTORY (monitoring/prometheus/targets/edge.json)
	$(BIN)/python -m fleet targets $(INV) $(if $(LIMIT),--limit $(LIMIT))

# Compose v2 plugin when present, else docker-compose (Debian's package).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
GRAFANA_PORT ?= 3000
GRAFANA_PASSWORD_FILE := build/grafana-admin-password
monitor: targets ## Prometheus + Grafana + Pushgateway for INVENTORY (official images); prints the Grafana URL
	@mkdir -p build; test -s $(GRAFANA_PASSWORD_FILE) || $(BIN)/python -c \
	    "import secrets; print(secrets.token_urlsafe(18))" > $(GRAFANA_PASSWORD_FILE)
	GRAFANA_ADMIN_PASSWORD="$${GRAFANA_ADMIN_PASSWORD:-$$(cat $(GRAFANA_PASSWORD_FILE))}" GRAFANA_PORT=$(GRAFANA_PORT) \
	    $(COMPOSE) -p edgegen-monitoring -f compose/monitoring.yml up -d
	@echo "Grafana    http://127.0.0.1:$(GRAFANA_PORT)  (user admin, password in $(GRAFANA_PASSWORD_FILE))"
	@echo "Prometheus http://127.0.0.1:9090   Pushgateway http://127.0.0.1:9091"

monitor-down: ## stop the monitoring stack (its data volumes are kept)
	GRAFANA_ADMIN_PASSWORD=unused $(COMPOSE) -p edgegen-monitoring -f compose/monitoring.yml down

test: $(STAMP) ## the whole suite, every tier this machine supports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only (in-process, about a minute)
	$(BIN)/python -m pytest -m "not integration and not e2e and not browser and not adversarial" $(PYTEST_ARGS)

# Wheelhouse for images: every dependency as a wheel for the target platform, downloaded on the
# host (containers and air-gapped devices install from it with --no-index).
WHEEL_PLATFORM ?= manylinux_2_28_x86_64
WHEELHOUSE ?= build/wheelhouse/linux-amd64
wheelhouse: $(STAMP) ## download wheels for the optimizer image into build/wheelhouse/
	$(BIN)/pip download --quiet --dest $(WHEELHOUSE) --only-binary=:all: \
	    --platform $(WHEEL_PLATFORM) --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    --python-version 3.11 -c constraints.txt $$(grep -E '^[A-Za-z]' constraints.txt) setuptools

image-optimizer: wheelhouse ## build the optimizer image (needs a Docker engine)
	docker build --network host -f images/optimizer/Dockerfile -t edgegen-optimizer:0.1.0 .

bench-images: $(STAMP) ## latency ratios of pruned / INT8 / FP16 image generators, side by side
	$(BIN)/python bench/bench_image_generators.py

bench-text: $(STAMP) ## GPT-2 124M and student decode tok/s: eager vs ORT FP32 vs ORT INT8
	$(BIN)/python bench/bench_text_decode.py

bench-llama-export: $(STAMP) ## SmolLM2-135M's real shape: export, validation, INT8/4-bit sizes and times
	$(BIN)/python bench/bench_llama_export.py

bench-serving: $(STAMP) ## decode tok/s through HTTP vs the runtime directly; image req/s at batch 1 and 8
	$(BIN)/python bench/bench_serving.py

bench-load: $(STAMP) ## 64 clients x 60 s, twice: only 200 or 503 + Retry-After; RSS growth < 5%
	$(BIN)/python bench/bench_load.py

# The Pixel companion (android/): a WebView APK built without Gradle from Debian's Android tools,
# running the page of /companion/ with onnxruntime-web, and the bundles packed as its assets.
APK_BUNDLES ?= $(patsubst %/manifest.json,%,$(wildcard bundles/*/manifest.json))
apk: $(STAMP) ## the companion APK, signed debug key: make apk [APK_BUNDLES="bundles/a bundles/b"]
	PYTHON=$(BIN)/python android/build.sh $(APK_BUNDLES)

clean: ## remove bundles, runs and caches (keeps .venv)
	rm -rf bundles runs mlruns results .pytest_cache
