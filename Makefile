# Fledge developer tasks. `make` lists them.
.DEFAULT_GOAL := help
SCENARIO ?= scenarios/error-regression.yaml

help: ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## rehearse a rollout in the simulator (SCENARIO=...), as README.md does
	cargo run --bin fledge-sim -- run $(SCENARIO)

test: ## run every test, as README.md does
	cargo test --workspace

core: ## build and test the pure core without IO
	cargo test -p fledge-controller --no-default-features --lib --tests

lint: ## formatting and clippy, as CI checks them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

bench: ## simulator throughput and memory (a release build)
	cargo run --release --bin fledge-sim -- bench

crd: ## regenerate the CRDs in the chart
	cargo run --bin fledge-controller -- crd > charts/fledge/crds/crds.yaml

ci: ## what CI runs
	.ci/run

.PHONY: help run test core lint bench crd ci
