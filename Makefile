# Deepfake kit: every target sets up what it needs on a fresh machine.
# `make help` lists the targets.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
TOOLS ?= .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
DEMO_DATA ?= data/demo
DEMO_VIDEOS ?= 64
RUN_ID ?= demo
PIPELINE_BUCKET ?= deepfake-local
PIPELINE_PROFILE ?= demo
PROD_APPROVAL ?= ask
# test processes (pytest-xdist): auto = one per core; each module runs whole on one of them, the longest first
# (tests/conftest.py); TEST_WORKERS=0 runs everything in one process
TEST_WORKERS ?= auto
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# AWS's pipeline-definition JSON schema (its repository has no licence, so it is fetched, not vendored)
SCHEMA_COMMIT := b4012b0aa4474afdc6ef3d0409d17d0049dfcd85
SCHEMA_SHA256 := 35633f4376dda695d1847bd16d72d3b3d9201f0106e75107eafbeef11ef5ce30
SCHEMA_URL := https://raw.githubusercontent.com/aws-sagemaker-mlops/sagemaker-model-building-pipeline-definition-JSON-schema/$(SCHEMA_COMMIT)/schema/pipeline-definition.schema.json

.DEFAULT_GOAL := help
.PHONY: help venv demo demo-data run test test-quick test-fast test-scale lint format bench quality pipeline-local pipeline-schema policies lock clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, alone, at pyproject.toml's pin; TORCH_INDEX_URL picks its build (https://download.pytorch.org/whl/cpu,
	# or your mirror of it: PyPI's Linux wheel pulls gigabytes of CUDA libraries; docs/architecture.md, "Dependencies")
	$(PY) -m pip install -q $(if $(TORCH_INDEX_URL),--index-url "$(TORCH_INDEX_URL)") "$$($(PY) -c 'import tomllib; print(next(d for d in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] if d.startswith("torch")))')"
	$(PY) -m pip install -q -e ".[demo,dev,aws,backbones]"
	$(PY) -m pip install -q --no-deps "$$($(PY) -c 'from deepfake.core.dependencies import PYFEAT; print(PYFEAT)')"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the kit with every extra

$(TOOLS_STAMP): infra/lint-tools.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q -r infra/lint-tools.txt
	touch $(TOOLS_STAMP)

demo-data: $(STAMP) ## build the small demo dataset from real faces shipped in packages
	$(BIN)/deepfake demo-data --out $(DEMO_DATA) --videos $(DEMO_VIDEOS)

# make demo ends with README's monitoring loop (serve with capture, two windows of traffic, monitor each) run as
# written on the model it has just gated: tests/test_monitoring_loop.py, which make test runs on a small model
demo: demo-data ## the main job: demo data, the four notebooks, gate, registry, reports, then the monitoring loop on its model
	$(BIN)/deepfake run --data $(DEMO_DATA) --run-id $(RUN_ID) --profile demo
	$(BIN)/pytest -q -p no:cacheprovider --timeout 1800 tests/test_monitoring_loop.py \
	  --loop-run runs/$(RUN_ID) --loop-data $(DEMO_DATA)

pipeline-local: demo-data ## the SageMaker pipeline executed here on the demo data, then the deploy pipeline of infra/cicd.yml walked: build, staging, test, approval (PROD_APPROVAL=ask|approve|reject), prod
	$(BIN)/pipeline-local --module-name pipelines.deepfake.pipeline \
	  --kwargs '{"default_bucket": "$(PIPELINE_BUCKET)", "profile": "$(PIPELINE_PROFILE)"}' \
	  --input InputDataUrl=$(DEMO_DATA) --approve --deploy --prod $(PROD_APPROVAL)

test: $(STAMP) ## run the whole test suite (notebooks on tiny data, servers, the AWS API emulator; what CI runs)
	$(BIN)/pytest $(PYTEST_PARALLEL)

test-quick: $(STAMP) ## after each change: every module's own tests and the quick integration tests (no notebooks, servers or AWS emulation), a few minutes
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not slow and not aws"

test-fast: test-quick

test-scale: $(STAMP) ## the pipeline on ~2,000 synthetic videos with volumes far smaller than the archive (~15 min)
	$(BIN)/pytest -m scale tests/test_scale.py

lint: $(STAMP) $(TOOLS_STAMP) ## ruff, notebooks without outputs, both CloudFormation templates (cfn-lint, checkov), the Dockerfile, the workflows, the roles and the lock up to date
	$(BIN)/ruff check src pipelines deploy tests benchmarks
	$(PY) -m deepfake.orchestration.notebook_lint notebooks
	$(BIN)/cfn-lint infra/cicd.yml deploy/endpoint-config-template.yml
	$(TOOLS)/bin/checkov --quiet --compact --skip-download --framework cloudformation \
	  -f infra/cicd.yml -f deploy/endpoint-config-template.yml
	$(TOOLS)/bin/hadolint infra/image/Dockerfile
	$(TOOLS)/bin/actionlint .github/workflows/*.yml
	$(PY) -m pipelines.cicd policies
	$(PY) -m pipelines.deepfake.image check

pipeline-schema: ## fetch AWS's pipeline-definition schema (pinned, sha256-checked) for tests/test_pipeline_schema.py
	mkdir -p .cache
	curl -fsSL -o .cache/pipeline-definition.schema.json "$(SCHEMA_URL)"
	echo "$(SCHEMA_SHA256)  .cache/pipeline-definition.schema.json" | sha256sum -c -

policies: $(STAMP) ## write infra/policies/*.json into infra/cicd.yml's roles
	$(PY) -m pipelines.cicd policies --write

lock: $(STAMP) ## resolve infra/image/requirements.lock again (the steps' and the image's pinned packages; needs the index)
	$(PY) -m pipelines.deepfake.image lock

format: $(STAMP) ## format the code and strip notebook outputs
	$(BIN)/ruff format src pipelines deploy tests benchmarks
	$(PY) -m deepfake.orchestration.notebook_lint --strip notebooks

bench: $(STAMP) ## benchmarks: our figures side by side with the limit, one table + JSON
	$(PY) -m benchmarks.run

quality: $(STAMP) ## does the demo model catch unseen manipulations, calibrated? self_blend vs dataset fakes
	$(PY) -m benchmarks.quality

clean: ## remove the environment, runs and generated data
	rm -rf $(VENV) $(TOOLS) runs data registry benchmarks/results .pytest_cache .ruff_cache
