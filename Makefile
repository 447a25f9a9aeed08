# PodMotion: `make demo` runs the main job on the local cluster, `make test` runs the tests.
# Both start with `make deps`, which installs and builds whatever is missing (idempotent).
SHELL := /bin/bash
.DEFAULT_GOAL := help

help:
	@echo "make demo   - set up this machine, bring up a 3-node local cluster and run the demo"
	@echo "make test   - set up this machine, type check, lint and run all tests"
	@echo "make deps   - only install and build what is missing"
	@echo "make bench  - freeze and client stall over 10 migrations; traffic-hold variants; freeze by memory size; a 3-container pod moved 10 times; simulation speed"
	@echo "make proof  - PostgreSQL under pgbench migrated 10 times, with a stop-and-copy baseline: report in bench/results/proof.md"

deps:
	@bash scripts/deps.sh

build: deps
	@rm -rf dist/test
	@npx tsc -p tsconfig.json
	@bash scripts/build-native.sh

typecheck: deps
	@npx tsc -p tsconfig.json --noEmit

lint: deps
	@npx eslint .

test: build lint
	@bash scripts/test.sh

demo: build
	@node dist/cli/podmotion.js demo

bench: build
	@bash bench/migrate/run.sh 10
	@node dist/bench/hold/run.js
	@node dist/bench/freeze/run.js --runs 5
	@node dist/bench/multi/run.js --migrations 10
	@node dist/bench/service/run.js --migrations 10
	@bash bench/sim/run.sh 500

proof: build
	@node dist/bench/proof/run.js --migrations 10 --baseline 2

clean:
	rm -rf dist

.PHONY: help deps build typecheck lint test demo bench proof clean
