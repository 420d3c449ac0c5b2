# EdgeGen. `make run` optimizes the default models and serves them here; `make test` runs the suite.
# Every target that needs Python creates .venv itself, with the extras of its role only (serving
# and optimizing never install Ansible or the test tools; operator commands never install torch);
# an install is redone only when the dependency files change.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' edge_app/__init__.py)
comma   := ,

# One stamp per set of extras (pyproject.toml), "+"-separated in its name.
RUN_STAMP := $(VENV)/.extras-serve+optimize
OPS_STAMP := $(VENV)/.extras-deploy+report
STUDY_STAMP := $(VENV)/.extras-serve+optimize+report+deploy
STAMP     := $(VENV)/.extras-serve+optimize+report+deploy+test
$(VENV)/.extras-%: pyproject.toml constraints.txt litert-build.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
	    -c constraints.txt -e '.[$(subst +,$(comma),$*)]'
	$(if $(findstring optimize,$*),$(BIN)/python -m pip install --quiet \
	    --disable-pip-version-check --no-deps -r litert-build.txt)
	@touch $@ $(if $(filter $@,$(STAMP)),$(RUN_STAMP) $(OPS_STAMP) $(STUDY_STAMP))  # every extra: each role's too

BUNDLES_DIR ?= bundles
RUNS_DIR ?= runs
HOST    ?= 127.0.0.1
PORT    ?= 8080
RESULTS ?= results
PYTEST_ARGS ?=

# What `make run` builds and serves: four quick recipes on data the machine already has, each with
# its `run` profile (one seed; the baseline and the optimized variants beside it).
# RUN_<recipe> lists the bundles a recipe makes, its baseline first.
RUN_RECIPES := dcgan-digits-quick beta-vae-digits-quick gpt2-pydoc-quick llama-pydoc-quick
RUN_dcgan-digits-quick   := dcgan-digits dcgan-digits-prune50 dcgan-digits-int8
RUN_beta-vae-digits-quick := beta-vae-digits
RUN_gpt2-pydoc-quick     := gpt2-pydoc gpt2-pydoc-int8
RUN_llama-pydoc-quick    := llama-pydoc llama-pydoc-distilled-int4
RUN_PROFILE := run
# MODEL=<hub id or dir>: that Llama-family checkpoint as published, INT8 and 4-bit, instead.
ifdef MODEL
MODEL_NAME  := $(shell printf '%s' '$(notdir $(patsubst %/,%,$(MODEL)))' | tr A-Z a-z)
RUN_RECIPES := llama-checkpoint
RUN_llama-checkpoint := $(MODEL_NAME) $(MODEL_NAME)-int8 $(MODEL_NAME)-int4
RUN_PROFILE :=
MODEL_SET   := model.checkpoint=$(MODEL) name=$(MODEL_NAME)
endif
RUN_SET ?=
RUN_DIRS := $(foreach r,$(RUN_RECIPES),$(addprefix $(BUNDLES_DIR)/,$(RUN_$(r))))

# A recipe's bundles are rebuilt only when it changes; a second `make run` reuses them.
define run_recipe
$(addsuffix /manifest.json,$(addprefix $(BUNDLES_DIR)/,$(RUN_$(1)))) &: recipes/$(1).yaml | $(RUN_STAMP)
	$(BIN)/python -m optimizer run recipes/$(1).yaml $(if $(RUN_PROFILE),--profile $(RUN_PROFILE)) \
	    --out $(BUNDLES_DIR)/$(firstword $(RUN_$(1))) --runs-dir $(RUNS_DIR) \
	    $(addprefix --set ,$(MODEL_SET) $(RUN_SET))
endef
$(foreach r,$(RUN_RECIPES),$(eval $(call run_recipe,$(r))))

.DEFAULT_GOAL := help
.PHONY: help venv run bundles optimize serve status images deploy bench report reproduce targets monitor monitor-down monitoring test test-fast lock wheelhouse image-optimizer bench-images bench-text bench-peers bench-llama-export bench-serving bench-load bench-fleet apk clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## create or update .venv with every extra (what `make test` uses)

bundles: $(addsuffix /manifest.json,$(RUN_DIRS)) ## build the default bundles (or MODEL=...) if missing or stale

run: bundles ## build the default models (once), measure them, serve them all on $(HOST):$(PORT)
	$(BIN)/python -m edge_app summary $(addprefix --bundle ,$(RUN_DIRS)) --out $(RESULTS)/summary
	$(BIN)/python -m edge_app serve $(addprefix --bundle ,$(RUN_DIRS)) --host $(HOST) --port $(PORT)

RECIPE ?= recipes/dcgan-digits-quick.yaml
optimize: $(RUN_STAMP) ## run a recipe: make optimize RECIPE=recipes/....yaml [SET="train.epochs=1 ..."]
	$(BIN)/python -m optimizer run $(RECIPE) --runs-dir $(RUNS_DIR) $(addprefix --set ,$(SET))

BUNDLES ?= $(RUN_DIRS)
serve: $(RUN_STAMP) ## serve chosen bundles: make serve BUNDLES="bundles/a bundles/b"
	$(BIN)/python -m edge_app serve $(addprefix --bundle ,$(BUNDLES)) --host $(HOST) --port $(PORT)

# The fleet's inventory: no default (fleet commands refuse without one, in one line), so that no
# device is probed by surprise; make one from ansible/inventory/example.yml.
INVENTORY ?=
INV = $(if $(INVENTORY),--inventory $(INVENTORY))
status: $(OPS_STAMP) ## probe every device of an inventory: make status INVENTORY=... [LIMIT=host,class]
	$(BIN)/python -m fleet status $(INV) $(if $(LIMIT),--limit $(LIMIT))

# Fleet rollout. Images: one per class (edgegen-edge:<version>-<class>-<arch>), built from a
# host-side wheelhouse and saved for devices that have no registry.
images: $(OPS_STAMP) ## build and save the edge server image: make images DEVICE=pi|jetson|local
	$(BIN)/python -m fleet images --device $(DEVICE) $(INV)

deploy: $(OPS_STAMP) ## roll out to a class: make deploy DEVICE=pi [INVENTORY=...] [LIMIT=host,...]
	$(BIN)/python -m fleet deploy --device $(DEVICE) $(INV) --bundles $(BUNDLES_DIR) \
	    $(if $(LIMIT),--limit $(LIMIT)) $(DEPLOY_ARGS)

# Device benchmark (the paper's method): every bundle x 3 repeats, each in a fresh process,
# with the idle baseline and a 60 s power window where a sensor exists. Resumable.
# DEVICE=local measures this machine; DEVICE=<class>|all measures the devices of INVENTORY
# inside their deployed containers (Ansible), and phones in the companion app (adb), and
# fetches the results.
DEVICE ?= local
BENCH_BUNDLES ?= $(patsubst %/manifest.json,%,$(wildcard $(BUNDLES_DIR)/*/manifest.json))
BENCH_ARGS ?=
bench: $(if $(filter local,$(DEVICE)),$(RUN_STAMP),$(OPS_STAMP)) ## measure bundles: make bench DEVICE=local|<class>|all [INVENTORY=...] [LIMIT=...] [BENCH_ARGS=...]
ifeq ($(DEVICE),local)
	$(BIN)/python -m edge_app bench $(addprefix --bundle ,$(BENCH_BUNDLES)) --device $(DEVICE) \
	    --out $(RESULTS)/bench $(BENCH_ARGS)
	$(BIN)/python -m fleet measured --results $(RESULTS)/bench --bundles $(BUNDLES_DIR)
else
	$(BIN)/python -m fleet bench --device $(DEVICE) $(INV) --bundles $(BUNDLES_DIR) \
	    --results $(RESULTS)/bench $(if $(LIMIT),--limit $(LIMIT)) \
	    $(if $(filter command line environment,$(origin BENCH_BUNDLES)),$(addprefix --bundle ,$(notdir $(BENCH_BUNDLES)))) \
	    $(BENCH_ARGS)
endif

report: $(OPS_STAMP) ## the paper's tables, figures and one HTML page from $(RESULTS)/bench
	$(BIN)/python -m fleet report --results $(RESULTS)/bench --out $(RESULTS)/report \
	    --bundles $(BUNDLES_DIR)

# One of the study's tables end to end (recipes/study/tables.yaml): its recipes, their bundles
# measured on DEVICE (local, or a class / all of INVENTORY), the report. Resumable.
TABLE ?= quick
reproduce: $(STUDY_STAMP) ## a study table: make reproduce TABLE=dcgan|beta-vae|gpt2|gpt2-ablation|gpt2-cross-corpus|quick [DEVICE=local|<class>] [INVENTORY=...] [PROFILE=ci]
	$(BIN)/python -m fleet reproduce $(TABLE) --device $(DEVICE) $(INV) --bundles $(BUNDLES_DIR) \
	    --runs-dir $(RUNS_DIR) --out $(RESULTS)/reproduce $(if $(PROFILE),--profile $(PROFILE)) \
	    $(addprefix --set ,$(SET)) $(addprefix --bench-arg=,$(BENCH_ARGS))

targets: $(OPS_STAMP) ## rewrite the device list of the stack make monitor runs, from INVENTORY
	$(BIN)/python -m fleet targets $(INV) $(if $(LIMIT),--limit $(LIMIT))

# Compose v2 plugin when present, else docker-compose (Debian's package).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
PROMETHEUS_PORT ?= 9090
ALERTMANAGER_PORT ?= 9093
PUSHGATEWAY_PORT ?= 9091
GRAFANA_PORT ?= 3000
# Grafana (no Debian package): GRAFANA_IMAGE from the local store, loaded first from
# GRAFANA_ARCHIVE (a `docker save` of it) when given; without it, the rest runs and make says so.
GRAFANA_IMAGE ?= grafana/grafana-oss:11.3.0
GRAFANA_PASSWORD_FILE := build/grafana-admin-password
MONITOR_ARCH := $(shell uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')
MONITOR_ENV = EDGEGEN_VERSION=$(VERSION) EDGEGEN_ARCH=$(MONITOR_ARCH) PROMETHEUS_PORT=$(PROMETHEUS_PORT) \
    ALERTMANAGER_PORT=$(ALERTMANAGER_PORT) PUSHGATEWAY_PORT=$(PUSHGATEWAY_PORT) \
    GRAFANA_PORT=$(GRAFANA_PORT) GRAFANA_IMAGE=$(GRAFANA_IMAGE)
monitor: $(OPS_STAMP) ## Prometheus, Alertmanager, Pushgateway (Debian-package images, no registry) + Grafana where its image is here
	$(BIN)/python -m fleet monitoring-images --platform linux/$(MONITOR_ARCH)
	$(BIN)/python -m fleet monitoring-config --out build/monitoring/local --port prometheus=$(PROMETHEUS_PORT) \
	    --port alertmanager=$(ALERTMANAGER_PORT) --port pushgateway=$(PUSHGATEWAY_PORT) \
	    --port grafana=$(GRAFANA_PORT) $(if $(ALERT_WEBHOOK),--webhook $(ALERT_WEBHOOK))
	$(BIN)/python -m fleet targets $(INV) $(if $(LIMIT),--limit $(LIMIT))
	@mkdir -p build; test -s $(GRAFANA_PASSWORD_FILE) || $(BIN)/python -c \
	    "import secrets; print(secrets.token_urlsafe(18))" > $(GRAFANA_PASSWORD_FILE)
	$(if $(GRAFANA_ARCHIVE),docker load -i $(GRAFANA_ARCHIVE))
	@if docker image inspect $(GRAFANA_IMAGE) >/dev/null 2>&1; then profile="--profile grafana"; \
	  else profile=; echo "Grafana: $(GRAFANA_IMAGE) is not in the local Docker store (GRAFANA_ARCHIVE=<docker save of it>, or docker pull it where a registry is reachable): starting without it"; fi; \
	  GRAFANA_ADMIN_PASSWORD="$${GRAFANA_ADMIN_PASSWORD:-$$(cat $(GRAFANA_PASSWORD_FILE))}" $(MONITOR_ENV) \
	    $(COMPOSE) -p edgegen-monitoring -f compose/monitoring.yml $$profile up -d
	@echo "Prometheus   http://127.0.0.1:$(PROMETHEUS_PORT)   Alertmanager http://127.0.0.1:$(ALERTMANAGER_PORT)   Pushgateway http://127.0.0.1:$(PUSHGATEWAY_PORT)"
	@docker image inspect $(GRAFANA_IMAGE) >/dev/null 2>&1 && echo "Grafana      http://127.0.0.1:$(GRAFANA_PORT)  (user admin, password in $(GRAFANA_PASSWORD_FILE))" || true

monitor-down: ## stop the monitoring stack (its data volumes are kept)
	GRAFANA_ADMIN_PASSWORD=unused $(MONITOR_ENV) $(COMPOSE) -p edgegen-monitoring -f compose/monitoring.yml --profile grafana down

monitoring: $(OPS_STAMP) ## deploy the monitoring stack to INVENTORY's monitoring hosts (Ansible, no registry)
	$(BIN)/python -m fleet monitoring $(INV) $(if $(LIMIT),--limit $(LIMIT))

# Pinned versions: constraints.txt, regenerated from pyproject.toml's extras by pip-tools (in a venv
# of its own); existing pins are kept unless UPGRADE=1. torch stays the pinned local CPU build.
PIP_TOOLS ?= pip-tools==7.6.2
lock: ## regenerate constraints.txt from pyproject.toml (pip-compile over every extra)
	@test -x build/lock-venv/bin/pip-compile || { $(PYTHON) -m venv build/lock-venv && \
	    build/lock-venv/bin/pip install --quiet --disable-pip-version-check '$(PIP_TOOLS)'; }
	CUSTOM_COMPILE_COMMAND='make lock' build/lock-venv/bin/pip-compile --quiet --all-extras --strip-extras --no-emit-index-url \
	    --no-emit-find-links $(if $(UPGRADE),--upgrade) \
	    --output-file constraints.txt pyproject.toml
	sed -i -e '/^edgegen @ /d' -e 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' constraints.txt

test: $(STAMP) ## the whole suite, every tier this machine supports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only (in-process, about a minute)
	$(BIN)/python -m pytest -m "not integration and not e2e and not browser and not adversarial" $(PYTEST_ARGS)

# Wheelhouse for images: every dependency as a wheel for the target platform, downloaded on the
# host (containers and air-gapped devices install from it with --no-index).
WHEEL_PLATFORM ?= manylinux_2_28_x86_64
WHEELHOUSE ?= build/wheelhouse/linux-amd64
wheelhouse: $(RUN_STAMP) ## download wheels for the optimizer image into build/wheelhouse/
	$(BIN)/pip download --quiet --dest $(WHEELHOUSE) --only-binary=:all: \
	    --platform $(WHEEL_PLATFORM) --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux2014_x86_64 \
	    --python-version 3.11 -c constraints.txt $$(grep -E '^[A-Za-z]' constraints.txt) setuptools
	$(BIN)/pip download --quiet --dest $(WHEELHOUSE) --only-binary=:all: --no-deps \
	    --platform $(WHEEL_PLATFORM) --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	    --platform manylinux2014_x86_64 --python-version 3.11 -r litert-build.txt

image-optimizer: wheelhouse ## build the optimizer image (needs a Docker engine)
	docker build --network host -f images/optimizer/Dockerfile --build-arg EDGEGEN_VERSION=$(VERSION) \
	    -t edgegen-optimizer:$(VERSION) -t edgegen-optimizer:latest .

bench-images: $(RUN_STAMP) ## latency ratios of pruned / INT8 / FP16 image generators, side by side
	$(BIN)/python bench/bench_image_generators.py

bench-text: $(RUN_STAMP) ## GPT-2 124M and student decode tok/s: eager vs ORT FP32 vs ORT INT8
	$(BIN)/python bench/bench_text_decode.py

# llama.cpp, the peer an edge user would pick instead: llama-cpp-python compiles it for this CPU
# (-march=native; 10-25 min on 2 cores) into a virtualenv of its own, one per CPU (its flags'
# hash: the host's CPU changes from day to day, and a build for another one may not run here).
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36
CPU_KEY   := $(shell grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-8)
LLAMA_VENV := build/llama-cpp-venv-$(CPU_KEY)
$(LLAMA_VENV)/.stamp:
	@test -x $(LLAMA_VENV)/bin/python || $(PYTHON) -m venv $(LLAMA_VENV)
	$(LLAMA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
	    '$(LLAMA_CPP_PYTHON)' numpy
	@touch $@

bench-peers: $(VENV)/.extras-serve+optimize+bench $(LLAMA_VENV)/.stamp ## EdgeGen vs llama.cpp (f32, q8_0, q4_0), same weights and token ids [BENCH_ARGS=...]
	$(BIN)/python bench/bench_peers.py --llama-python $(LLAMA_VENV)/bin/python $(BENCH_ARGS)

bench-llama-export: $(RUN_STAMP) ## SmolLM2-135M's real shape: export, validation, INT8/4-bit sizes and times
	$(BIN)/python bench/bench_llama_export.py

bench-serving: $(RUN_STAMP) ## decode tok/s through HTTP vs the runtime directly; image req/s at batch 1 and 8
	$(BIN)/python bench/bench_serving.py

bench-load: $(RUN_STAMP) ## 64 clients x 60 s, twice: only 200 or 503 + Retry-After; RSS growth < 5%
	$(BIN)/python bench/bench_load.py

# Twelve simulated devices (Docker, as the e2e tier builds them): fresh deploys to 1, 4 and 12 in
# one run, then the fault drill of tests/e2e/test_fleet_faults.py.
bench-fleet: $(STAMP) ## deploy wall time for 1, 4 and 12 simulated devices, as ratios, and the faults
	EDGEGEN_BENCH_FLEET=1 $(BIN)/python -m pytest tests/e2e/test_fleet_faults.py -p no:cacheprovider -rs $(PYTEST_ARGS)

# The Pixel companion (android/): a WebView APK built without Gradle from Debian's Android tools,
# running the page of /companion/ with onnxruntime-web, and the bundles packed as its assets.
APK_BUNDLES ?= $(patsubst %/manifest.json,%,$(wildcard $(BUNDLES_DIR)/*/manifest.json))
apk: $(RUN_STAMP) ## the companion APK, signed debug key: make apk [APK_BUNDLES="bundles/a bundles/b"]
	PYTHON=$(BIN)/python android/build.sh $(APK_BUNDLES)

clean: ## remove bundles, runs and caches (keeps .venv)
	rm -rf bundles runs mlruns results .pytest_cache
