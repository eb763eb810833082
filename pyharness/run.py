"""One run: provision, render, build, initramfs, boot, test; each stage timed and reported.

This composes the stage modules and nothing else. Any `StageError` ends the
run as a failed case named after its stage; the results directory is
written whatever happens.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import build, initramfs, kapi, kernels, qemu, render
from .check import DriverModel, check_commands, check_state
from .config import REPO, Config
from .guest import ZsTest
from .model import policy
from .progress import Progress, StageError
from .report import Case, RunResult, new_run, save_sources
from .triage import find_crash
from .workload import POOL, Workload

BUILD = REPO / "build"


@dataclass(frozen=True)
class RunOptions:
    refresh: bool = False  # re-resolve and re-download the kernel
    # Test-only: a guest shell command run after the modules load (a crash or a hang).
    inject: str | None = None


def choose_accel(config: Config, profile: qemu.Profile, spec: qemu.BootSpec, p: Progress) -> str:
    if config.accel != "auto":
        return config.accel
    return "kvm" if qemu.kvm_works(profile, spec, kernels.cache_dir(), p) else "tcg"


def _test(
    zstest: ZsTest, config: Config, result: RunResult, p: Progress, batches_log: Path
) -> None:
    """Run the workload batch by batch; stop at the first divergence."""
    api = kapi.api_for(config.kernel)
    driver = DriverModel(policy(api.model_policy))
    batches = Workload(seed=config.workload_seed, batch_ops=config.workload_batch).batches(
        config.workload_ops
    )
    commands = 0
    with batches_log.open("w") as log:
        for number, lines in enumerate(batches):
            start = time.monotonic()
            log.write(f"# batch {number}\n" + "".join(f"{line}\n" for line in lines))
            log.flush()
            answer = zstest.batch(lines)
            divergences = check_commands(number, lines, answer, driver)
            if "stats" in lines and not divergences:
                rows = zstest.classes(POOL)
                divergences += check_state(number, answer, rows, driver.model(POOL))
            commands += len(lines)
            case = Case(f"batch-{number:03d}", time.monotonic() - start)
            result.cases.append(case)
            if divergences:
                case.kind = divergences[0].kind
                case.failure = "\n".join(str(d) for d in divergences[:20])
                p.say(f"DIVERGENCE in batch {number}: {divergences[0]}")
                p.say(f"reproducer: {batches_log} (batches 0..{number})")
                break
            p.detail(f"batch {number}: {len(lines)} commands agree with the model")
    result.info["commands"] = commands
    p.say(f"{commands} commands in {len(result.cases)} batches checked against the model")


@dataclass(frozen=True)
class Prepared:
    """Everything a boot needs, built for one kernel and allocator."""

    kernel: kernels.Kernel
    sources: render.RenderedSources
    built: build.BuildResult
    image: initramfs.Initramfs


def prepare(config: Config, p: Progress, refresh: bool = False) -> Prepared:
    with p.stage("provision"):
        kernel = kernels.source_for(config.kernel).provision(
            kernels.cache_dir(), p, refresh=refresh
        )
    with p.stage("render"):
        out = BUILD / "kmod" / f"{config.kernel}-{config.allocator}"
        sources = render.render(kernel, kapi.api_for(config.kernel), config.allocator, out)
    with p.stage("build"):
        built = build.build(kernel, sources, p)
    with p.stage("initramfs"):
        image = initramfs.build_initramfs(
            built.modules,
            BUILD / f"initramfs-{config.kernel}-{config.allocator}.cpio",
            shell_tty=qemu.Profile.load().shell_tty,
        )
    return Prepared(kernel, sources, built, image)


def boot(
    config: Config, p: Progress, prepared: Prepared, console_log: Path, transcript: TextIO
) -> qemu.Guest:
    """Boot the guest to its shell and load the modules; the caller closes it."""
    with p.stage("boot"):
        profile = qemu.Profile.load()
        spec = qemu.BootSpec(
            kernel=prepared.kernel.boot_image,
            initrd=prepared.image.path,
            console_log=console_log,
            accel="tcg",
            memory_mb=config.memory_mb,
            cpus=config.cpus,
        )
        spec = dataclasses.replace(spec, accel=choose_accel(config, profile, spec, p))
        p.say(f"booting Linux {prepared.kernel.release} ({spec.accel}, {config.cpus} CPUs)")
        guest = qemu.Guest(spec, profile, transcript, p, command_timeout=config.command_timeout)
        try:
            guest.boot(initramfs.READY_MARKER, config.boot_timeout)
            p.say(f"guest shell up after {guest.boot_seconds:.1f} s")
            ZsTest(guest).load(prepared.image.modules)
        except BaseException:
            guest.close()
            raise
    return guest


def run(config: Config, p: Progress, options: RunOptions = RunOptions()) -> RunResult:
    result = new_run(config.kernel, config.allocator)
    p.say(f"results: {result.directory}")
    started = time.monotonic()
    try:
        prepared = prepare(config, p, options.refresh)
        result.info["kernel_release"] = prepared.kernel.release
        result.info["kernel_package"] = prepared.kernel.package_version
        result.info["build_warnings"] = list(prepared.built.warnings)
        save_sources(result, list(prepared.sources.files))
        with (
            (result.directory / "session.log").open("w") as transcript,
            boot(config, p, prepared, result.console_log(), transcript) as guest,
        ):
            result.info["accel"] = guest.spec.accel
            with p.stage("test"):
                if options.inject is not None:
                    guest.run(options.inject)
                _test(ZsTest(guest), config, result, p, result.directory / "batches.txt")
                (result.directory / "dmesg.log").write_text(guest.run("dmesg"))
                guest.poweroff()
                # A report printed while no command was waiting fails the run too.
                crash = find_crash(guest.console_text())
                if crash is not None:
                    raise qemu.GuestError("crash", crash.headline() + "\n" + crash.excerpt, crash)
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
        stages = [name for name in p.completed if name != "test"]
        result.cases[:0] = [Case(name, p.timings.get(name, 0.0)) for name in stages]
        result.timings = dict(p.timings)
        result.timings["total"] = time.monotonic() - started
        result.write()
    return result
