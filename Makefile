# One command per chore, identical locally and in CI.
# `make demo` and `make test` create (or reuse) the project virtualenv in .venv and install
# the pinned dependencies from requirements.lock: a fresh machine needs only Python >= 3.11.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedmatch-installed
PROTOS := $(wildcard proto/fedmatch/rpc/v1/*.proto)

.PHONY: venv browser demo test lint protos bench bench-flood clean

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fedmatch needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# --no-deps: the lock is the complete, tested closure. It holds opencv-python-headless
	# and deliberately not opencv-python, which insightface declares: both install `cv2`.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

# `make demo DEMO_ARGS=--desk` serves the verifier desk until Ctrl-C (its address is printed).
DEMO_ARGS ?=
demo: $(STAMP)
	$(VENV)/bin/fedmatch demo $(DEMO_ARGS)

# The RPC fuzzing (>= 10,000 inputs per RPC, about 19 minutes of CPU) runs as two processes,
# the coordinator's RPCs and the nodes' (each has its own federation in its own temporary
# directories), beside the rest of the suite and at the lowest CPU priority (nice 19). The
# rest uses about one of the two cores on average (it waits on servers, subprocesses and
# deadlines), so the fuzzing takes the idle one, and any CPU the rest asks for goes to it
# first: its tests that time deadlines and slow nodes see what they saw running alone.
# Measured on a clean clone: 31.5 min with the fuzzing after the rest (20 + 10.5), 20.2 min
# beside it (the rest 19.3 min; the fuzzing's two halves done after 11.9 and 13.3 min).
FUZZ := tests/integration/test_fuzz_rpcs.py
# The two processes' shares, each about half of the fuzzing's CPU: the coordinator's RPCs
# with the node's SetRecordStatus, and the node's other RPCs.
FUZZ_FIRST := coordinator or SetRecordStatus

# The verifier desk's browser tests (tests/integration/test_desk_browser.py) drive Debian's
# chromium through chromium-driver. Installed here when missing, as root; otherwise a
# warning, and those tests are skipped.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
		echo "WARNING: chromium or chromedriver is missing and this is not root: the desk's" \
			"browser tests will be skipped (apt-get install chromium chromium-driver)" >&2; \
	fi

test: $(STAMP) browser
	@set -u; out=$$(mktemp -d); fuzz="nice -n 19 $(PY) -m pytest -q -p no:cacheprovider $(FUZZ)"; \
	$$fuzz --basetemp="$$out/nodes" -k "not ($(FUZZ_FIRST))" >"$$out/nodes.log" 2>&1 & \
	nodes=$$!; \
	$$fuzz --basetemp="$$out/coordinator" -k "$(FUZZ_FIRST)" >"$$out/coordinator.log" 2>&1 & \
	coordinator=$$!; \
	trap 'kill $$nodes $$coordinator 2>/dev/null; rm -rf "$$out"' EXIT; \
	rest_rc=0; $(PY) -m pytest -q --ignore=$(FUZZ) || rest_rc=$$?; \
	nodes_rc=0; wait $$nodes || nodes_rc=$$?; \
	coordinator_rc=0; wait $$coordinator || coordinator_rc=$$?; \
	echo "--- RPC fuzzing of the coordinator's RPCs:"; cat "$$out/coordinator.log"; \
	echo "--- RPC fuzzing of the nodes' RPCs:"; cat "$$out/nodes.log"; \
	test $$rest_rc -eq 0 && test $$coordinator_rc -eq 0 && test $$nodes_rc -eq 0

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy fedmatch node coordinator tests

# Regenerates the committed stubs; tests/unit/test_protos.py fails if they drift.
protos: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -Iproto \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. $(PROTOS)

# The standard sizes of the engine's targets (issue 20), on both parameter sets; each prints
# one JSON line (~10 GB of RAM and several minutes for the 1M x 512 case).
KERNEL_SET := ckks-n8192-q29.29.29.25.60-k
# The opt-in narrow set (7.875 B per record down, masks over 5 bits: fedmatch/he/params.py).
NARROW_SET := ckks-n8192-q29.29.29.25.60-k-narrow
bench: $(STAMP)
	$(VENV)/bin/fedmatch bench search --records 100000 --dim 128 --queries 10
	$(VENV)/bin/fedmatch bench search --records 100000 --dim 128 --queries 10 --param-set $(KERNEL_SET)
	$(VENV)/bin/fedmatch bench search --records 1000000 --dim 128 --queries 5
	$(VENV)/bin/fedmatch bench search --records 1000000 --dim 128 --queries 5 --param-set $(KERNEL_SET)
	$(VENV)/bin/fedmatch bench search --records 1000000 --dim 128 --queries 5 --param-set $(NARROW_SET)
	$(VENV)/bin/fedmatch bench search --records 1000000 --dim 512 --queries 3
	$(VENV)/bin/fedmatch bench search --records 1000000 --dim 512 --queries 3 --param-set $(KERNEL_SET)
	$(VENV)/bin/fedmatch bench federation --nodes 27 --records-per-node 20000 --queries 10
	$(VENV)/bin/fedmatch bench faces --photos ../shared/data/faces --images 200
	$(VENV)/bin/fedmatch bench audit
	$(MAKE) bench-flood

# Honest lookups alone, then under a hostile state's flood (issue 21): one JSON line.
bench-flood: $(STAMP)
	$(VENV)/bin/fedmatch bench flood --nodes 3 --records-per-node 20000 \
		--quiet-seconds 60 --flood-seconds 60 --flooders 2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
