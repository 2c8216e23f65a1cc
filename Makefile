# The two commands of the README's quick start: `make serve` and `make test`.
# Both work on a fresh Debian 12 machine as root: they install what they need first.
PY ?= python3
# test-host rootfs, mirror and apt caches survive between runs on one machine (a fresh one builds them)
export KAI_TEST_CACHE_DIR ?= /var/cache/kai-tests
VENV := .venv
KAI := $(VENV)/bin/kai
APT_PACKAGES := debootstrap systemd-container openssh-server openssh-client zstd shellcheck \
	iproute2 iptables sudo procps psmisc gnupg dpkg-dev strace postgresql chromium curl ca-certificates

.PHONY: serve test deps venv apt bench bench-scale

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

apt:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping apt packages ($(APT_PACKAGES))"; fi

deps: apt venv

# kai's main job on its embedded default: Prefect server on SQLite, served deployments, UI, REST API
serve: venv
	$(KAI) serve

# the whole test suite, end-to-end tests on booted test hosts included
test: deps
	@[ "$$(id -u)" != 0 ] || sysctl -qw fs.inotify.max_user_instances=8192
	KAI_TEST_HOSTS=$${KAI_TEST_HOSTS:-6} $(VENV)/bin/python -m pytest -p tests.ci_guard -ra --durations=25 $(PYTEST_ARGS)

bench: deps
	$(VENV)/bin/python -m benchmarks.orchestration $(BENCH_ARGS)

# many clusters at once (issue #15): C clusters x N hosts through the REST API, 2 workers on
# PostgreSQL vs kai serve's SQLite server side by side; e.g. BENCH_ARGS='--clusters 1,5,20'
bench-scale: deps
	$(VENV)/bin/python -m benchmarks.concurrency $(BENCH_ARGS)
