# webstack: one command for the lab, one for the tests.
#   make lab STAGE=0        containers for a stage + converge + smoke check
#   make lab-down STAGE=0   remove them
#   make lab-smoke STAGE=0  the smoke check again, on a running lab
#   make test               everything CI runs: make checks beside make molecule
#   make checks             the static checks: lint syntax unit
#   make lint               yamllint, ansible-lint (production), ruff (ruff.toml), mypy --strict
#   make syntax             ansible-playbook --syntax-check of every playbook
#   make unit               pytest tests/unit
#   make molecule           the Molecule scenarios of MOLECULE_SCENARIOS (a table of times at the end)
#   make images             the local Debian 12 and 13 systemd images (debootstrap, docker import)
#   make repl-status STAGE=1  replication state of the lab's replicas
#   make deploy STAGE=1     rolling deploy of app/ (REF=<git ref>: that commit's; SERIAL=<n>: hosts per batch)
#   make rollback STAGE=1   every app host back to the release it last left
#   make design STAGE=3     design report + diagram of a stage (INVENTORY=path for any), in build/design/
#   make design-docs        the four stages' reports and diagrams under docs/design/ (committed)
#   make chaos STAGE=1      each host of a running lab killed, then cut off, under load: checked against make design
#   make bench              converge, serving and failover benchmarks of stages 1 and 3 (BENCH_STAGES), to build/bench.json
#   make venv               the Python tools in .venv (requirements.txt); make graphviz: Debian's dot
#   make clean              remove build/
SHELL := /bin/bash
STAGE ?= 0
VENV ?= .venv
BUILD := $(CURDIR)/build
PYTHON := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_HOME := $(BUILD)/ansible-home
export ANSIBLE_LOCAL_TEMP := $(BUILD)/ansible-home/tmp
export PYTHONDONTWRITEBYTECODE := 1
export WEBSTACK_SECRETS_DIR ?= $(BUILD)/secrets
# scenario:debian-release pairs, run in this order (stage1 and stage2 mix in Debian 13 hosts themselves); a comma
# joins scenarios that run at the same time, @other.phase starts one once the other reaches that phase or ends
# (@other.ended): stage2's and stage3's converges use the CPU that stage1's verifier leaves idle while it waits on
# failovers and load loops; stage3 starts once stage2 has ended, so stage2's timed tests share the 2 cores with
# two scenarios, not three. /solo holds a scenario's timed tests until the rest of its group has ended (stage3
# times its failovers).
MOLECULE_SCENARIOS ?= stage0:bookworm,firewall:bookworm \
  stage1:bookworm,stage2:bookworm@stage1.verify,roles:bookworm@stage2.verify,stage3:bookworm@stage2.ended/solo
# Stages make bench measures, one after the other (each brings its own lab up and leaves it running).
BENCH_STAGES ?= 1 3

# Lab inventory: the stage's own plus the generated connection overlay.
LAB_INVENTORY = -i inventories/stage$(STAGE) -i build/lab/stage$(STAGE)/lab.yml

.PHONY: help venv lab lab-down lab-smoke deploy rollback repl-status test lint unit syntax molecule checks images bench chaos design design-docs \
	graphviz clean

help:
	@sed -n 's/^#   //p' Makefile

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-runtime.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

lab: venv
	$(PYTHON) tools/lab.py up $(STAGE)

lab-down: venv
	$(PYTHON) tools/lab.py down $(STAGE)

lab-smoke: venv
	$(PYTHON) tools/lab.py smoke $(STAGE)

deploy: venv
	$(PYTHON) tools/lab.py play $(STAGE) playbooks/deploy.yml $(if $(REF),-e deploy_ref=$(REF)) \
	  $(if $(SERIAL),-e deploy_serial=$(SERIAL))

rollback: venv
	$(PYTHON) tools/lab.py play $(STAGE) playbooks/rollback.yml

repl-status: venv
	ansible-playbook playbooks/replication-status.yml $(LAB_INVENTORY)

images:
	tools/ensure-docker.sh
	@command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
	@# Both releases at once: debootstrap waits on the mirror as much as on the CPU.
	tools/build-image.sh bookworm & b=$$!; tools/build-image.sh trixie & t=$$!; wait $$b && wait $$t

lint: venv
	yamllint --strict .
	ansible-lint --profile production
	ruff check app filter_plugins plugins tools tests molecule  # rules: ruff.toml
	mypy --strict --ignore-missing-imports app/foobar_app filter_plugins plugins/filter plugins/callback tools
	MYPYPATH=app:filter_plugins:plugins/filter:tools:tests/integration:tests/unit \
	  mypy --strict --ignore-missing-imports --explicit-package-bases tests/unit tests/integration
	@# Each scenario's verifier on its own (they all have a conftest module).
	for tests in molecule/*/tests; do MYPYPATH=tools:tests/integration:$$tests \
	  mypy --strict --ignore-missing-imports --explicit-package-bases $$tests || exit 1; done

syntax: venv
	@for pb in site.yml playbooks/*.yml; do \
	  ansible-playbook --syntax-check -i inventories/stage1 "$$pb" >/dev/null || exit 1; done; \
	echo "syntax-check: all playbooks pass"

unit: venv
	pytest -q -p no:cacheprovider tests/unit

molecule: venv images
	$(PYTHON) tools/molecule_run.py $(MOLECULE_SCENARIOS)

# The static checks run beside the Molecule scenarios, at the lowest CPU priority: they take only the cycles the
# scenarios leave idle (their verifiers wait on timers and containers), so the converges run as fast as alone.
# Their output is printed once both are done, then why each failed scenario failed (a CI log shows its end).
test: venv images
	@mkdir -p $(BUILD)
	@nice -n 19 $(MAKE) --no-print-directory checks > $(BUILD)/checks.log 2>&1 & checks=$$!; \
	$(MAKE) --no-print-directory molecule; molecule=$$?; \
	wait $$checks; status=$$?; cat $(BUILD)/checks.log; \
	[ $$molecule -eq 0 ] || cat $(BUILD)/molecule-failures.txt 2>/dev/null; \
	echo "make test: checks exit $$status, molecule exit $$molecule"; [ $$status -eq 0 ] && [ $$molecule -eq 0 ]

checks: lint syntax unit

# The design report and diagram of a stage (or INVENTORY=path) under build/design/; design-docs: the four stages'
# under docs/design/ (committed, shown in the README; a unit test fails when they are stale).
design: venv graphviz
	$(PYTHON) tools/design.py $(if $(INVENTORY),--inventory $(INVENTORY),$(STAGE))

design-docs: venv graphviz
	$(PYTHON) tools/design.py --docs

# The design report's claims on a running lab (make lab STAGE=n first): build/chaos/stage<n>.{json,md}.
chaos: venv
	$(PYTHON) tools/chaos.py $(STAGE) $(CHAOS_ARGS)

graphviz:
	@command -v dot >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends graphviz >/dev/null; }

bench: venv images
	for stage in $(BENCH_STAGES); do $(PYTHON) tools/bench.py --stage $$stage --out $(BUILD)/bench.json || exit 1; done

clean:
	rm -rf $(BUILD)
