"""`zskit run --module FILE.c|DIR`: an external test module against the allocator under test.

The allocator is provisioned, rendered and built as for any run; the user's module is
built against its symbols (kmod/external.py), put in an initramfs beside it, and loaded
after it in a guest booted as usual (guest/external.py). The verdict: PASS when insmod
succeeded and the kernel log holds no report (oops, BUG, WARN, KASAN, KCSAN, lockdep...);
FAIL with the report's excerpt, insmod's errno, or the deadline that killed the guest.
Results go to the run's directory as for every run, with the module's output in
`module.log`.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..guest.external import LoadOutcome, find_report, load_external, module_log
from ..kmod import external
from ..kmod.own import BUILTIN_PREFIX
from ..paths import BUILD
from ..progress import Progress, StageError
from ..report import Case, RunResult, new_run, save_sources
from . import run
from .config import Config

SETTLE_SECONDS = 2.0  # default time a module's threads get to print after insmod returns
GUEST_MODULE_DIR = "lib/modules/zskit/external"
# Modules zskit loads itself: a test module may not take their names.
RESERVED = ("zsmalloc", BUILTIN_PREFIX.rstrip("_"), "zstest")


@dataclass(frozen=True)
class ModuleOptions:
    path: Path  # the user's .c file or directory
    args: tuple[str, ...] = ()  # module parameters, NAME=VALUE
    timeout: float | None = None  # insmod's deadline; None: the configured command timeout
    settle: float = SETTLE_SECONDS
    results_dir: Path | None = None
    refresh: bool = False


def check_options(options: ModuleOptions) -> external.ModuleSource:
    """The options' errors, before any provisioning; the module's source when they are fine."""
    if options.timeout is not None and options.timeout <= 0:
        raise StageError("--module-timeout takes a positive number of seconds")
    if not 0 <= options.settle <= 600:
        raise StageError("--settle takes 0..600 seconds")
    return external.check_source(options.path, RESERVED)


def verdict(outcome: LoadOutcome, console: str, timeout: float) -> tuple[str, str] | None:
    """(kind, message) of a failed module run; None when it passed."""
    output = module_log(console)
    log = f"\nmodule output:\n{output}" if output else "\n(the module printed nothing)"
    if outcome.error is not None:
        e = outcome.error
        if e.kind == "timeout":
            what = {
                "insmod": f"`{outcome.command}` did not return within {timeout:.0f} s "
                "(module_init hangs?)",
                "rmmod": f"`rmmod {outcome.name}` did not return within {timeout:.0f} s "
                "(module_exit hangs?)",
            }.get(outcome.step, f"the guest stopped answering ({outcome.step})")
            return "timeout", f"{what}; QEMU killed{log}"
        if e.crash is not None:
            return "crash", f"{e.crash.headline()}\n{e.crash.excerpt}"
        return e.kind, f"{e}{log}"
    if outcome.rc != 0:
        why = outcome.errno or f"exit status {outcome.rc}"
        return "insmod", (
            f"insmod {outcome.name} failed: {why} (module_init returned an error)\n"
            f"{outcome.shell_output}{log}"
        )
    report = find_report(console)
    if report is not None:
        return report.kind, f"{report.headline()}\n{report.excerpt}"
    return None


def _save_module_sources(result: RunResult, built: external.BuiltModule) -> None:
    dest = result.directory / "sources" / "module"
    for path in built.files:
        target = dest / path.relative_to(built.directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _link_warnings(built: external.BuiltModule, allocator: str, p: Progress) -> list[str]:
    warnings = []
    for ko in built.modules:
        if built.allocator_calls(ko.stem):
            p.detail(f"{ko.name} calls " + ", ".join(built.allocator_calls(ko.stem)))
            continue
        elsewhere = built.other_zs_calls(ko.stem)
        text = (
            f"{ko.name} does not link against the allocator under test ({allocator}): it "
            "calls none of its exports"
            + (
                f"; its {', '.join(elsewhere)} resolve to another zsmalloc (the kernel's)"
                if elsewhere
                else ""
            )
        )
        p.say(f"warning: {text}")
        warnings.append(text)
    return warnings


def run_module(config: Config, p: Progress, options: ModuleOptions) -> RunResult:
    """Build, load and judge the external module; the results directory is always written."""
    source = check_options(options)
    timeout = float(options.timeout or config.command_timeout)
    result = new_run(config.kernel_id, config.allocator, directory=options.results_dir)
    p.say(f"results: {result.directory}")
    result.info.update(module=str(source.path), module_args=list(options.args))
    outcomes: list[LoadOutcome] = []

    def finish() -> None:
        console = result.console_log().read_text(errors="replace") if outcomes else ""
        output = module_log(console)
        (result.directory / "module.log").write_text(output + "\n" if output else "")
        result.info["module_output_lines"] = len(output.splitlines()) if output else 0
        result.info["module_unloaded"] = [o.unloaded for o in outcomes]
        result.info["module_errno"] = next((o.errno for o in outcomes if o.errno), None)

    with run.recorded(result, p, "module", finish):
        prepared = run.prepare(config, p, options.refresh)
        result.info["kernel_release"] = prepared.kernel.release
        result.info["kernel_package"] = prepared.kernel.package_version
        save_sources(result, list(prepared.sources.files))
        target = config.kernel_id.name(config.allocator)
        with p.stage("build-module"):
            dest = BUILD / "external" / target / source.name
            built = external.build_module(prepared.kernel, prepared.sources, source, dest, p)
            _save_module_sources(result, built)
            result.info["build_warnings"] = list(prepared.built.warnings + built.warnings)
            result.info["module_warnings"] = _link_warnings(built, config.allocator, p)
        with p.stage("initramfs"):
            allocator = [ko for ko in prepared.built.modules if ko.stem != "zstest"]
            files = {f"{GUEST_MODULE_DIR}/{ko.name}": ko for ko in built.modules}
            image = run.guest_image(
                prepared.kernel,
                allocator,
                BUILD / f"initramfs-{target}-module.cpio",
                p,
                files=files,
            )
        booting = dataclasses.replace(prepared, image=image)
        with (
            (result.directory / "session.log").open("w") as transcript,
            run.boot(config, p, booting, result.console_log(), transcript) as guest,
        ):
            result.info["accel"] = guest.spec.accel
            result.info["boot_seconds"] = round(guest.boot_seconds, 3)
            # A concurrent test module's numbers mean little without the CPUs it ran on
            # (run.boot has checked they are the ones asked for).
            result.info["guest_cpus"] = guest.spec.cpus
            with p.stage("module"):
                for ko in built.modules:
                    p.say(f"insmod {ko.name} (deadline {timeout:.0f} s)")
                    start = time.monotonic()
                    outcome = load_external(
                        guest,
                        f"/{GUEST_MODULE_DIR}/{ko.name}",
                        options.args,
                        timeout,
                        options.settle,
                    )
                    outcomes.append(outcome)
                    console = guest.console_text()
                    failed = verdict(outcome, console, timeout)
                    case = Case(f"module-{outcome.name}", time.monotonic() - start)
                    if failed is not None:
                        case.kind, case.failure = failed
                    result.cases.append(case)
                    if failed is not None:
                        break
                if guest.child is not None:
                    (result.directory / "dmesg.log").write_text(guest.run("dmesg"))
                    guest.poweroff()
                # A report printed after the last verdict (while unloading, shutting down).
                report = find_report(guest.console_text())
                if report is not None and result.first_failure is None:
                    headline = f"{report.headline()}\n{report.excerpt}"
                    result.cases.append(Case("kernel-log", kind=report.kind, failure=headline))
    return result
