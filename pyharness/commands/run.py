"""One run: provision, render, build, initramfs, boot, test; each stage timed and reported.

This composes the stage modules and nothing else. Any `StageError` ends the
run as a failed case named after its stage; the results directory is
written whatever happens.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..check import ktap, scenarios
from ..check.driver import (
    Divergence,
    DriverModel,
    check_classes,
    check_commands,
    check_geometry,
    keeps_pool,
)
from ..check.scenarios import Params, Scenario
from ..check.workload import Workload
from ..guest import initramfs, qemu, tree_tests
from ..guest.channel import open_channel
from ..guest.modules import kcsan_counters, load_modules
from ..guest.triage import find_crash, known_races
from ..guest.zstest import ZsTest
from ..kernel import foreign
from ..kernel.api import KernelApi
from ..kernel.detect import api_of
from ..kernel.manifest import Kernel
from ..kernel.provision import provision, source_for
from ..kernel.tree import describe, holding
from ..kernel.tree_tests import TreeTests, find_tree_tests
from ..kmod import build, render
from ..locking import locked
from ..model import Policy
from ..paths import BUILD, cache_dir, lock_file
from ..progress import Progress, StageError
from ..report import Case, RunResult, new_run, save_sources
from .config import Config

DIVERGENCE_ORDER = {"protocol": 0, "data": 1, "command-result": 2, "class-stats": 3}


@dataclass(frozen=True)
class RunOptions:
    refresh: bool = False  # re-resolve and re-download the kernel
    batches: list[list[str]] | None = None  # a replay instead of the default workload
    # Test-only: a guest shell command run after the modules load (a crash or a hang).
    inject: str | None = None
    # The results directory itself (zskit matrix, CI shards); default build/results/<run-id>.
    results_dir: Path | None = None
    # Checks of the same boot after the workload (zskit validate's zram round trip): they
    # add their own cases to the result. One that ends the guest leaves it closed.
    after: Callable[[qemu.Guest, RunResult, Progress], None] | None = None
    # Scenarios (check/scenarios) run after the workload in the same boot, each a case.
    scenarios: tuple[str, ...] = ()
    scenario_ops: int | None = None  # each scenario's operation bound; None: its default
    scenario_seconds: int | None = None  # each scenario's deadline; None: its default
    scenario_repeat: int = 1
    tree_tests: bool = True  # a tree's own kselftests and KUnit suites, after the checks

    def scenario_params(self, scenario: Scenario, cpus: int) -> Params:
        """A scenario's bounds on a guest of `cpus` CPUs; out-of-range ones are refused."""
        return scenarios.params_for(
            scenario, cpus, self.scenario_ops, self.scenario_seconds, repeat=self.scenario_repeat
        )


def choose_accel(config: Config, profile: qemu.Profile, spec: qemu.BootSpec, p: Progress) -> str:
    if not profile.kvm_cpu:  # another machine than the host's
        if config.accel == "kvm":
            raise StageError(f"{profile.binary} runs under TCG only here: use --accel tcg")
        return "tcg"
    if config.accel != "auto":
        return config.accel
    # Parallel runs (zskit matrix) share the probe's record and log: one probes, the rest read.
    with locked(lock_file("kvm-probe")):
        return "kvm" if qemu.kvm_works(profile, spec, cache_dir(), p) else "tcg"


def default_batches(config: Config, api: KernelApi, fast_channel: bool = False) -> list[list[str]]:
    """The workload, and the probes after it when asked for ("always"), or when the fast
    channel carries them ("auto": over the serial shell they cost about 25 s a run)."""
    workload = Workload(
        seed=config.workload_seed,
        batch_ops=config.workload_batch,
        partial_writes=api.map_object,
        churn_percent=config.workload_churn_percent,
        lookups=api.lookup_class_index,
        page_size=api.geometry.page_size,
    )
    if config.workload_probes == "always" or (config.workload_probes == "auto" and fast_channel):
        return workload.suite(config.workload_ops)
    return workload.batches(config.workload_ops)


def read_replay(path: Path) -> list[list[str]]:
    """Batches from a replay file: `# batch N` lines start a batch (the batches.txt format)."""
    batches: list[list[str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("# batch") or not batches:
            batches.append([])
        if line and not line.startswith("#"):
            batches[-1].append(line)
    batches = [b for b in batches if b]
    if not batches:
        raise StageError(f"{path} holds no commands; a replay file is a saved batches.txt")
    return batches


GEOMETRY_POOL = "zskit-geometry"


def check_geometry_first(
    zstest: ZsTest, driver: DriverModel, result: RunResult, p: Progress
) -> bool:
    """A fresh pool's class table against the model's, before any workload: a zsmalloc
    whose classes the model does not know fails here, on its first differing row,
    rather than in a divergence report that would only repeat it."""
    start = time.monotonic()

    def command(line: str) -> Divergence | None:
        return next(iter(check_commands(-1, [line], zstest.batch([line]), driver)), None)

    wrong = command(f"create {GEOMETRY_POOL}")
    if wrong is None:
        rows = zstest.classes(GEOMETRY_POOL)
        wrong = check_geometry(rows, driver.model(GEOMETRY_POOL))
        wrong = wrong or command(f"destroy {GEOMETRY_POOL}")
    case = Case("geometry", time.monotonic() - start)
    result.cases.append(case)
    if wrong is None:
        p.detail("the classes table has the model's geometry")
        return True
    case.kind, case.failure = wrong.kind, wrong.detail
    p.say(f"MODEL MISMATCH before the workload: {wrong.detail}")
    return False


def check_batches(
    zstest: ZsTest,
    batches: list[list[str]],
    api: KernelApi,
    result: RunResult,
    p: Progress,
    classes: bool = True,  # the allocator has a debugfs `classes` file to check
    policy: Policy | None = None,  # the allocator's model; None: the kernel's upstream
    name: str = "batch",  # the cases' prefix; another than "batch" is a scenario's
) -> Divergence | None:
    """Run batches one by one against the model; stop at the first divergence (returned)."""
    workload = name == "batch"
    driver = DriverModel(api, policy)
    if workload:
        result.info["classes_checked"] = classes
        if not classes:
            p.say("no debugfs `classes` file (CONFIG_ZSMALLOC_STAT off): classes not checked")
        zstest.check_version()
        if classes and not check_geometry_first(zstest, driver, result, p):
            return Divergence("model", -1, str(result.cases[-1].failure))
    batches_log = result.directory / ("batches.txt" if workload else f"{name}-batches.txt")
    ops = commands = 0
    model_seconds = 0.0
    first: Divergence | None = None
    with batches_log.open("w") as log:
        reply = zstest.send_batch(batches[0]) if batches else None
        for number, lines in enumerate(batches):
            start = time.monotonic()
            log.write(f"# batch {number}\n" + "".join(f"{line}\n" for line in lines))
            log.flush()
            assert reply is not None
            answer = reply()
            # On the fast channel, when the batch keeps the pool whose classes are checked,
            # the classes read and the next batch go out before the model runs: the guest
            # works while the host checks, in the same order of requests as without.
            ahead = zstest.pipelined and keeps_pool(lines)
            pool = driver.current if classes and not driver.unmodelled else None
            rows_ahead = zstest.send_classes(pool) if ahead and pool is not None else None
            following = batches[number + 1] if number + 1 < len(batches) else None
            reply = zstest.send_batch(following) if ahead and following else None
            before_model = time.monotonic()
            divergences = check_commands(number, lines, answer, driver)
            model_seconds += time.monotonic() - before_model
            if classes and driver.current is not None and not driver.unmodelled:
                assert not ahead or driver.current == pool, (pool, driver.current)
                rows = rows_ahead() if rows_ahead else zstest.classes(driver.current)
                divergences += check_classes(number, rows, driver.model(driver.current))
            if following and reply is None and not divergences:
                reply = zstest.send_batch(following)
            # The most specific first: a wrong class row explains a wrong page total.
            divergences.sort(key=lambda d: DIVERGENCE_ORDER.get(d.kind, len(DIVERGENCE_ORDER)))
            commands += len(lines)
            ops += sum(int(line.split()[2]) if line.startswith("churn") else 1 for line in lines)
            if divergences:
                if reply is not None:
                    reply()  # the batch already sent: its answer must not reach a later read
                if workload:
                    failed = divergences[0].kind, "\n".join(str(d) for d in divergences[:20])
                    result.cases.append(Case(f"batch-{number:03d}", time.monotonic() - start))
                    result.cases[-1].kind, result.cases[-1].failure = failed
                p.say(f"DIVERGENCE in {name} {number}: {divergences[0]}")
                p.say(f"reproducer: {batches_log} (batches 0..{number})")
                first = divergences[0]
                break
            if workload:
                result.cases.append(Case(f"batch-{number:03d}", time.monotonic() - start))
            p.detail(f"{name} {number}: {len(lines)} commands agree with the model")
    if not workload:
        return first
    split = {**zstest.seconds, "model": model_seconds}
    result.info.update(
        commands=commands,
        operations=ops,
        time_split={k: round(v, 3) for k, v in split.items()},
    )
    p.say(
        f"{ops} operations ({commands} commands) in {len(result.cases)} batches "
        "checked against the model; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in split.items())
    )
    return first


def check_scenarios_runnable(options: RunOptions, kernel: Kernel, cpus: int) -> None:
    """Before booting: every scenario known, its bounds in range, its kernel options there."""
    if options.scenarios and kernel.target.page_size != "4k":
        raise scenarios.ScenarioError(
            f"the scenarios assume 4 KiB pages (their object sizes, the swapper's pages), "
            f"not {kernel.target.name}'s {kernel.target.page_size}: run them on x86_64, arm64 "
            "or i386"
        )
    for name in options.scenarios:
        scenario = scenarios.find(name)
        options.scenario_params(scenario, cpus)
        missing = scenarios.missing_options(scenario, kernel.config)
        if missing:
            raise scenarios.ScenarioError(
                f"scenario {name} needs {', '.join(missing)}: pick a variant that has it "
                "(--variant debug has fault injection; see `zskit scenarios`)"
            )


def run_scenarios(
    zstest: ZsTest, prepared: Prepared, options: RunOptions, result: RunResult, p: Progress
) -> None:
    """Each scenario of the options in turn, one case each; a failing one ends the rest."""
    sources = prepared.sources
    counts: dict[str, object] = {}
    result.info["scenarios"] = counts
    for name in options.scenarios:
        scenario = scenarios.find(name)
        params = options.scenario_params(scenario, zstest.guest.spec.cpus)

        def check(batches: list[list[str]], name: str = name) -> str | None:
            found = check_batches(
                zstest,
                batches,
                prepared.api,
                result,
                p,
                sources.classes_file,
                sources.policy,
                name=f"scenario-{name}",
            )
            return None if found is None else str(found)

        ctx = scenarios.Context(
            zstest.guest, zstest, prepared.api, sources.policy, prepared.kernel.config, p, check
        )
        p.say(
            f"scenario {name}: {scenario.summary} ({params.operations} {scenario.unit}, "
            f"{params.seconds} s, {params.cpus} CPUs, {params.repeat} round(s))"
        )
        start = time.monotonic()
        outcome = scenario.run(ctx, params)
        case = Case(f"scenario-{name}", time.monotonic() - start)
        counts[name] = {**outcome.counts, "seconds": round(case.seconds, 3)}
        result.cases.append(case)
        if outcome.failure is not None:
            case.kind, case.failure = outcome.kind, f"scenario {name}: {outcome.failure}"
            p.say(f"FAILED scenario {name} ({outcome.kind}): {outcome.failure}")
            return
        p.say(f"scenario {name} passed in {case.seconds:.1f} s: {outcome.counts}")


def run_tree_tests(guest: qemu.Guest, found: TreeTests, result: RunResult, p: Progress) -> None:
    """The tree's own tests, a case each (a kselftest program, a KUnit suite); their
    output is kept as tree-tests.ktap in the results."""
    documents: list[tuple[str, str, bool, float]] = []  # (case prefix, KTAP, kselftest?, s)
    for selftest in found.kselftests:
        if selftest.unbuilt:
            p.say(
                f"selftests/{selftest.name}: not run, programs kselftest compiles first: "
                + ", ".join(selftest.unbuilt)
            )
        if selftest.programs:
            p.say(f"the tree's selftests/{selftest.name}: {', '.join(selftest.programs)}")
            start = time.monotonic()
            text = tree_tests.run_kselftest(guest, selftest)
            seconds = time.monotonic() - start
            documents.append((f"tree-selftests-{selftest.name}", text, True, seconds))
    if found.kunit:
        p.say(f"the tree's KUnit modules: {', '.join(ko.name for ko in found.kunit)}")
        start = time.monotonic()
        logs = tree_tests.run_kunit(guest, found)
        seconds = (time.monotonic() - start) / len(logs)
        documents += [(f"tree-kunit-{name}", text, False, seconds) for name, text in logs.items()]
    summary: dict[str, object] = {}
    result.info["tree_tests"] = summary
    with (result.directory / "tree-tests.ktap").open("w") as out:
        for prefix, text, kselftest, seconds in documents:
            out.write(text + "\n")
            root = ktap.parse(text, prefix)
            # A document that cannot be read is one failed case; else a case per test.
            for test in root.subtests if not root.errors else [root]:
                label = test.name.rsplit(": ", 1)[-1] if kselftest else test.name
                case = Case(prefix if test is root else f"{prefix}-{label}", seconds)
                case.failure = ktap.verdict(test, printed_failures=kselftest)
                case.kind = None if case.failure is None else "tree-test"
                summary[case.name] = test.status if case.failure is None else "failed"
                result.cases.append(case)
                if case.failure is not None:
                    p.say(f"FAILED the tree's {case.name}:\n{case.failure}")
    if documents:
        p.say("the tree's own tests: " + ", ".join(f"{k} {v}" for k, v in summary.items()))


@dataclass(frozen=True)
class Prepared:
    """Everything a boot needs, built for one kernel and allocator."""

    kernel: Kernel
    api: KernelApi  # its zsmalloc API facts, read from its own sources (kernel/detect.py)
    sources: render.RenderedSources
    built: build.BuildResult
    image: initramfs.Initramfs
    tree_tests: TreeTests = TreeTests()  # what a tree carries of its own tests


def prepare(config: Config, p: Progress, refresh: bool = False) -> Prepared:
    with p.stage("provision"):
        # Before a long provisioning.
        render.check_allocator(source_for(config.kernel_id), config.allocator)
        kernel = provision(
            config.kernel_id, p, refresh, fragments=config.config_fragments, cc=config.cc
        )
    return prepare_modules(config, kernel, p)


def prepare_modules(config: Config, kernel: Kernel, p: Progress) -> Prepared:
    """The stages after provisioning: what an edit of the templates or of a tree's
    mm/zsmalloc.c makes stale, and `zskit dev` redoes."""
    target = config.kernel_id.name(config.allocator)  # 6.1-upstream, 6.1-upstream-minimal
    with build.building(BUILD / "kmod" / target, p):
        with p.stage("render"):
            api = api_of(kernel)
            sources = render.render(
                kernel, api, config.allocator, BUILD / "kmod" / target, config.own
            )
        with p.stage("build"):
            built = build.build(kernel, sources, p)
        with p.stage("initramfs"):
            found = find_tree_tests(config.tree, kernel.modules) if config.tree else TreeTests()
            executables, files = tree_tests.image_files(found)
            image = guest_image(
                kernel,
                built.modules,
                BUILD / f"initramfs-{target}.cpio",
                p,
                files=files,
                executables=executables,
            )
    return Prepared(kernel, api, sources, built, image, found)


def guest_image(
    kernel: Kernel,
    modules: Sequence[Path],
    dest: Path,
    p: Progress,
    files: Mapping[str, Path] | None = None,
    executables: Mapping[str, bytes] | None = None,
) -> initramfs.Initramfs:
    """The initramfs for the kernel's machine: its busybox, the guest programs built for
    it, its shell port, the kernel's zram.ko and brd.ko and its fast-channel drivers."""
    machine = kernel.target
    return initramfs.build_initramfs(
        modules,
        dest,
        shell_tty=qemu.Profile.load(machine.profile).shell_tty,
        busybox=foreign.busybox(machine.debian_arch, p) if machine.cross else initramfs.BUSYBOX,
        files=files,
        executables=executables,
        kernel_modules=kernel.modules,
        channel_built_in=kernel.channel_built_in,
        cc=machine.cc,
    )


def boot(
    config: Config,
    p: Progress,
    prepared: Prepared,
    console_log: Path,
    transcript: TextIO,
    kernel_args: tuple[str, ...] = (),  # beyond the kernel's own (scenarios' boot_args)
    counter: tuple[Path, Path] | None = None,  # the counting plugin and its output (TCG)
) -> qemu.Guest:
    """Boot the guest to its shell and load the modules; the caller closes it."""
    with p.stage("boot"):
        guest, socket = _booted(config, p, prepared, console_log, transcript, kernel_args, counter)
        try:
            p.say(f"guest shell up after {guest.boot_seconds:.2f} s")
            guest.check_cpus()
            if config.fast_channel:
                guest.data_channel, why = open_channel(guest, socket)
                if why:
                    p.say(f"no fast channel ({why}): batches go over the serial shell")
            else:
                p.say("batches go over the serial shell (--transport serial)")
            load_modules(guest, prepared.image.modules)
        except BaseException:
            guest.close()
            raise
    return guest


def _booted(
    config: Config,
    p: Progress,
    prepared: Prepared,
    console_log: Path,
    transcript: TextIO,
    kernel_args: tuple[str, ...],
    counter: tuple[Path, Path] | None,
) -> tuple[qemu.Guest, Path]:
    """A guest at /init's shell, and its channel's socket."""

    def start() -> tuple[qemu.Guest, Path]:
        """A guest not yet booted, and its channel's socket, in a directory of its own."""
        profile = qemu.Profile.load(prepared.kernel.target.profile)
        socket = Path(tempfile.mkdtemp(prefix="zskit-")) / "channel"
        spec = qemu.BootSpec(
            kernel=prepared.kernel.boot_image,
            initrd=prepared.image.path,
            console_log=console_log,
            accel="tcg",
            memory_mb=max(config.memory_mb, profile.min_memory_mb),
            cpus=config.cpus,
            shutdown=prepared.kernel.shutdown_command,
            extra_kernel_args=(*prepared.kernel.boot_args, *kernel_args),
            kcsan=prepared.kernel.config("KCSAN") == "y",
            channel_socket=socket,
            counter=counter,
        )
        if counter is None:
            spec = dataclasses.replace(spec, accel=choose_accel(config, profile, spec, p))
        p.say(f"booting Linux {prepared.kernel.release} ({spec.accel}, {config.cpus} CPUs)")
        guest = qemu.Guest(spec, profile, transcript, p, command_timeout=config.command_timeout)
        guest.on_close.append(lambda: shutil.rmtree(socket.parent, ignore_errors=True))
        return guest, socket

    guest, socket = start()
    try:
        guest.boot(initramfs.READY_MARKER, config.boot_timeout)
    except qemu.GuestError as e:
        # Nothing of zskit's runs before /init: a guest gone or hung there with no
        # kernel report (under TCG, seen in CI: a reset once, a hang after SMP bring-up
        # once in some thousand boots) earns one more boot; one where QEMU said why (a
        # bad option) or the kernel crashed does not. The first console is kept.
        if e.kind not in ("exited", "timeout") or guest.init_started:
            raise
        if "".join(guest.session).strip():
            raise
        first = console_log.with_name(f"{console_log.stem}-first-boot.log")
        shutil.copyfile(console_log, first)
        how = f"exited ({guest.ended})" if e.kind == "exited" else "hung"
        p.say(f"the guest {how} before /init with no kernel report: booting again ({first})")
        guest, socket = start()
        guest.boot(initramfs.READY_MARKER, config.boot_timeout)
    return guest, socket


def run(
    config: Config,
    p: Progress,
    options: RunOptions = RunOptions(),
    prepared: Prepared | None = None,
) -> RunResult:
    """A whole run; `prepared` skips the build stages (tests bring modified modules). A run
    on a tree holds the tree's lock throughout: another zskit on it waits (and says so)."""
    with holding(config.tree, p):
        return _run(config, p, options, prepared)


@contextmanager
def recorded(
    result: RunResult, p: Progress, test_stage: str, finish: Callable[[], None] | None = None
) -> Iterator[None]:
    """A run's body: a StageError ends it as a failed case named after its stage; the
    stages' cases (but `test_stage`, whose cases the body adds), the timings and
    results.json are written whatever happens, after `finish`."""
    started = time.monotonic()
    try:
        yield
    except StageError as e:
        stage = p.failed_stage or "setup"
        kind = getattr(e, "kind", "error")
        result.cases.append(Case(stage, failure=f"{stage}: {e}", kind=kind))
        p.say(f"FAILED in {stage} ({kind}): {e}")
    except KeyboardInterrupt:
        stage = p.failed_stage or "setup"
        result.cases.append(Case(stage, failure=f"{stage}: interrupted", kind="interrupted"))
        raise
    finally:
        if finish is not None:
            finish()
        stages = [name for name in p.completed if name != test_stage]
        result.cases[:0] = [Case(name, p.timings.get(name, 0.0)) for name in stages]
        result.timings = dict(p.timings)
        result.timings["total"] = time.monotonic() - started
        result.write()


def _run(config: Config, p: Progress, options: RunOptions, prepared: Prepared | None) -> RunResult:
    result = new_run(config.kernel_id, config.allocator, directory=options.results_dir)
    p.say(f"results: {result.directory}")
    if config.tree is not None:  # the working state built: its commit, and whether dirty
        result.info.update(describe(config.tree))
    with recorded(result, p, "test"):
        prepared = prepared or prepare(config, p, options.refresh)
        check_scenarios_runnable(options, prepared.kernel, config.cpus)
        result.info["kernel_release"] = prepared.kernel.release
        result.info["kernel_package"] = prepared.kernel.package_version
        result.info["build_warnings"] = list(prepared.built.warnings)
        save_sources(result, list(prepared.sources.files))
        with (
            (result.directory / "session.log").open("w") as transcript,
            boot(
                config,
                p,
                prepared,
                result.console_log(),
                transcript,
                tuple(a for n in options.scenarios for a in scenarios.find(n).boot_args),
            ) as guest,
        ):
            result.info["accel"] = guest.spec.accel
            # QEMU start to the guest's shell answering (modules not loaded yet).
            result.info["boot_seconds"] = round(guest.boot_seconds, 3)
            result.info["cpus"] = guest.spec.cpus  # checked against the guest's online count
            result.info["channel"] = "virtio-serial" if guest.data_channel else "serial shell"
            with p.stage("test"):
                if options.inject is not None:
                    guest.run(options.inject)
                api = prepared.api
                fast = prepared.image.fast_channel and config.fast_channel
                batches = options.batches or default_batches(config, api, fast)
                if not (options.batches or fast) and config.workload_probes == "auto":
                    p.say("the probes are left out without the fast channel (--probes: ~25 s)")
                sources = prepared.sources
                zstest = ZsTest(guest)
                failed = check_batches(
                    zstest, batches, api, result, p, sources.classes_file, sources.policy
                )
                if options.scenarios and failed is None:
                    run_scenarios(zstest, prepared, options, result, p)
                if guest.spec.kcsan and guest.child is not None:
                    result.info["kcsan"] = counters = kcsan_counters(guest)
                    p.say(
                        f"KCSAN: {counters.get('setup_watchpoints', 0)} watchpoints, "
                        f"{counters.get('data_races', 0)} data races"
                    )
                if options.tree_tests and prepared.tree_tests and guest.child is not None:
                    run_tree_tests(guest, prepared.tree_tests, result, p)
                if options.after is not None:
                    options.after(guest, result, p)
                if guest.child is not None:
                    (result.directory / "dmesg.log").write_text(guest.run("dmesg"))
                    guest.poweroff()
                # A report printed while no command was waiting fails the run too.
                console = guest.console_text()
                if races := known_races(console):
                    result.info["known_races"] = races
                    p.say(f"known races of unmodified zsmalloc reported: {', '.join(races)}")
                crash = find_crash(console)
                if crash is not None and not any(c.kind == "crash" for c in result.cases):
                    raise qemu.GuestError("crash", crash.headline() + "\n" + crash.excerpt, crash)
    return result
