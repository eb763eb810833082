# zskit: `make qemu-test` (the main job) and `make test` (all tests).
# Both install what they need first: Debian packages, then the Python
# package in .venv. Kernels are provisioned into the cache on first use.

APT_PACKAGES := qemu-system-x86 busybox-static gcc libc6-dev make libelf-dev bc flex bison \
	xz-utils zstd debootstrap cpio python3-venv
VENV := .venv
PY := $(VENV)/bin/python
ZSKIT := $(VENV)/bin/zskit
ZSKIT_ARGS ?=
# `make qemu-test ALLOCATOR=upstream` (or own, builtin; KERNEL=6.12 likewise): one run's
# choice without editing .config.
ALLOCATOR ?=
KERNEL ?=
RUN_ARGS := $(if $(ALLOCATOR),--allocator $(ALLOCATOR)) $(if $(KERNEL),--kernel $(KERNEL))

.PHONY: setup host-deps qemu-test qemu-compare qemu-bench bench-loop qemu-matrix test test-scenarios unit lint menuconfig defconfig \
	savedefconfig olddefconfig clean

setup: host-deps $(VENV)/.installed

# Silent when everything is present; installs with apt as root or through
# passwordless sudo; otherwise says what to install and stops.
host-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' \
			|| missing="$$missing $$p"; \
	done; \
	need_lists=; apt-cache show --no-all-versions linux-source-6.1 >/dev/null 2>&1 || need_lists=1; \
	[ -z "$$missing$$need_lists" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo; \
	else echo "zskit: missing Debian packages:$$missing$${need_lists:+ (and apt lists)}." >&2; \
		echo "zskit: run as root, or: sudo apt-get update && sudo apt-get install$$missing" >&2; \
		exit 1; fi; \
	echo "zskit: updating apt lists and installing:$${missing:- nothing}"; \
	$$sudo apt-get update -q >/dev/null || exit 1; \
	if [ -n "$$missing" ]; then \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing >/dev/null || exit 1; \
	fi

$(VENV)/.installed: pyproject.toml
	@echo "zskit: installing the Python package into $(VENV)"
	@python3 -m venv $(VENV)
	@$(VENV)/bin/pip install -q -e '.[test]'
	@touch $@

# The own allocator by default, then the kernel's zsmalloc in the same boot (RUN_BASELINE).
qemu-test: setup
	$(ZSKIT) run $(RUN_ARGS) $(ZSKIT_ARGS)

# Ours against the kernel's zsmalloc in one boot: both suites, density, speed, zram
# (build/results/latest-compare/compare.md).
qemu-compare: setup
	$(ZSKIT) compare $(if $(KERNEL),--kernel $(KERNEL)) $(ZSKIT_ARGS)

# Memory on real data: the corpora through ours, the kernel's zsmalloc and kmalloc
# (build/results/latest-bench/bench.md and plots); BENCH_SIZE per corpus.
BENCH_SIZE ?= 256M
qemu-bench: setup
	$(ZSKIT) bench $(if $(KERNEL),--kernel $(KERNEL)) --size $(BENCH_SIZE) $(ZSKIT_ARGS)

# The inner loop's figures (warm run, zskit dev's edit-to-verdict, 1M operations), fast
# channel against serial shell side by side: build/results/latest-bench-loop/bench.md.
bench-loop: setup
	$(ZSKIT) bench loop $(ZSKIT_ARGS)

# Every entry of the matrix chosen in .config (MATRIX_*), in parallel; merged
# results in build/results/matrix-<stamp>/.
qemu-matrix: setup
	$(ZSKIT) matrix $(ZSKIT_ARGS)

# mypy's settings (and the files it checks) are in pyproject.toml.
lint: setup
	$(VENV)/bin/ruff check pyharness tests
	$(VENV)/bin/ruff format --check pyharness tests
	$(VENV)/bin/mypy

# All tests: tests/unit (no QEMU, no kernel provisioning), then tests/guest.
test: setup lint
	$(PY) -m pytest -q $(PYTEST_ARGS) tests/unit tests/guest

# Every scenario on the debug, kcsan and nocompaction kernels, both allocators, five
# rounds each: any failure is a false alarm (cold: three kernel builds first).
test-scenarios: setup
	ZSKIT_SCENARIOS=all $(PY) -m pytest -q $(PYTEST_ARGS) tests/guest/test_scenarios.py \
		tests/guest/test_scenarios_swap.py

# The unit tests alone: under a minute, nothing booted, built or fetched.
unit: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests/unit

menuconfig: setup
	$(PY) -m menuconfig Kconfig

# Presets: configs/NAME_defconfig, loaded with `make NAME_defconfig`
# (`make defconfig` loads configs/default_defconfig).
defconfig: default_defconfig

%_defconfig: setup
	@test -f configs/$@ || { echo "zskit: no preset configs/$@; presets:" \
		$$(cd configs && ls *_defconfig) >&2; exit 1; }
	$(PY) -m defconfig --kconfig Kconfig configs/$@

# A minimal config (only what differs from Kconfig's defaults) in ./defconfig,
# the form presets are kept in.
savedefconfig: setup
	$(PY) -m savedefconfig --kconfig Kconfig --out defconfig

# An old .config's MATRIX_KERNEL_* booleans become MATRIX_KERNELS first (kconfiglib would
# drop them as unknown options).
olddefconfig: setup
	$(PY) -m pyharness.commands.config migrate
	$(PY) -m olddefconfig Kconfig

clean:
	rm -rf build
