.DEFAULT_GOAL := help
PYTHON ?= python3
NATIVE := python/rsock/_rsock$(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: install
install: ## editable install with the test extra (release build)
	$(PYTHON) -m pip install -e '.[test]'

.PHONY: build-dev
build-dev: ## rebuild the native module in place; the rename keeps running processes on the old file
	PYO3_BUILD_EXTENSION_MODULE=1 cargo build --release --lib
	cp target/release/lib_rsock.so $(NATIVE).new && mv -f $(NATIVE).new $(NATIVE)

.PHONY: test
test: ## run the test suite
	$(PYTHON) -m pytest

.PHONY: stress
stress: ## the stress tests at full size (tests/stress; the figures README.md reports)
	RSOCK_STRESS=full $(PYTHON) -m pytest tests/stress -v -s -p no:cacheprovider --timeout 3600

.PHONY: lint
lint: ## the lints CI runs
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	ruff check .
	ruff format --check .
	$(PYTHON) -m mypy.stubtest rsock._rsock --allowlist .mypy-stubtest-allowlist
	$(PYTHON) -m mypy --strict --follow-imports=silent tests/typing/ python/rsock/aio.py

.PHONY: format
format: ## format Rust and Python
	cargo fmt
	ruff format .
	ruff check --fix .

.PHONY: ci
ci: ## what CI runs: .ci/run
	.ci/run
