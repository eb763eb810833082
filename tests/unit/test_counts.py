"""The counting plugin's dumps read and attributed to a module's functions, on an object
file gcc builds here (its ELF sections and symbols as a .ko has them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pyharness.check.counts import Loaded, attribute, parse_sections, read_dumps
from pyharness.commands.perf import bench_calls
from pyharness.kmod.elf import module_code
from pyharness.progress import StageError

DUMPS = """dump 0
1 ffffffffc0001000 5
end 0
dump 1
1 ffffffffc0001000 7
2 ffffffffc0001010 3
0 ffffffffc0002000 4
7 ffffffffc0009000 1
end 1
dump 2
1 ffffffffc0001000 9
"""


def test_only_complete_dumps_are_read() -> None:
    dumps = read_dumps(DUMPS)
    assert dumps == [
        {(1, 0xFFFFFFFFC0001000): 5},
        {
            (1, 0xFFFFFFFFC0001000): 7,
            (2, 0xFFFFFFFFC0001010): 3,
            (0, 0xFFFFFFFFC0002000): 4,
            (7, 0xFFFFFFFFC0009000): 1,
        },
    ]


def test_sections_are_read_as_the_guest_lists_them() -> None:
    text = "/sys/module/zsmalloc/sections/.text 0xffffffffc0001000\n.exit.text 0xffffffffc0002000\n"
    assert parse_sections(text + "garbage\n") == {
        ".text": 0xFFFFFFFFC0001000,
        ".exit.text": 0xFFFFFFFFC0002000,
    }


@pytest.fixture
def obj(tmp_path: Path) -> Path:
    source = tmp_path / "m.c"
    source.write_text(
        "int first(int x) { return x * 3 + 1; }\n"
        "__attribute__((cold)) int second(int x) { return x ? first(x - 1) : 0; }\n"
    )
    out = tmp_path / "m.o"
    subprocess.run(["gcc", "-O2", "-c", str(source), "-o", str(out)], check=True)
    return out


def test_counts_go_to_the_functions_of_the_module_and_nothing_else(obj: Path) -> None:
    code = module_code(obj)
    assert code.sections.get(".text", 0) > 0
    names = {f.name: f for f in code.functions}
    assert {"first", "second"} <= set(names)
    base = {name: 0xFFFFFFFFC0001000 + i * 0x1000 for i, name in enumerate(code.sections)}
    loaded = Loaded(code, base)
    at = {n: base[f.section] + f.offset for n, f in names.items()}
    dump = {
        (1, at["first"]): 10,
        (1, at["second"]): 2,
        (2, at["first"] + 1): 5,
        (1, 0xFFFFFFFFA0000000): 99,  # another module's code
    }
    counts = attribute(dump, loaded)
    assert counts.phases == {"alloc": 12, "free": 5}
    assert counts.functions == {"alloc": {"first": 10, "second": 2}, "free": {"first": 5}}


def test_a_module_whose_sections_the_guest_did_not_list_is_refused(obj: Path) -> None:
    with pytest.raises(ValueError, match="did not say where"):
        Loaded(module_code(obj), {})


def test_a_file_that_is_not_elf64_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.ko"
    bad.write_bytes(b"#!/bin/sh\n" * 10)
    with pytest.raises(StageError, match="not a 64-bit little-endian ELF"):
        module_code(bad)


def test_a_bench_calls_each_phase_as_zt_cmd_bench_does() -> None:
    calls = bench_calls(5, map_api=True)
    assert calls["alloc"] == calls["free"] == calls["write_end"] == 5
    assert calls["read_begin"] == calls["read_end"] == 5 + 3  # all, then 0, 2, 4
    assert "write_end" not in bench_calls(5, map_api=False)  # zs_obj_write has no end
