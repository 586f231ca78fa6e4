"""Hostile scenario files (part of the fault suite): each gives exit 2 with the file (and its
line where it has one), no traceback, within a few seconds and a bounded memory, both from
`validate` and from a run (which loads through the model cache: run twice, the second run is
the cached path)."""

from __future__ import annotations

import os

import pytest

from tests.support.faultserver import run_mailrun

SECONDS = 20.0  # interpreter start and the check, on a busy machine
MIB = 200.0

HEAD = "name: hostile\nconnect: {host: 127.0.0.1, port: 9}\n"


def refused(args, tmp_path, *needles):
    for _ in range(2):  # the second run meets what the first left in the cache
        r = run_mailrun(args, timeout=60)
        print(f"\nFIGURE exit {r.status} in {r.seconds:.1f} s, peak {r.peak_mib:.0f} MiB")  # (pytest -s)
        assert r.status == 2, r.output
        assert "Traceback" not in r.output and "internal error" not in r.output, r.output
        assert r.seconds < SECONDS, (r.seconds, r.output)
        assert r.peak_mib < MIB, (r.peak_mib, r.output)
        for n in needles:
            assert n in r.output, r.output
    return r


@pytest.fixture(autouse=True)
def _cache_env(monkeypatch, tmp_path):
    """The model cache under tmp_path (the child mailrun inherits the environment)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _bomb_vars() -> list[str]:
    """a1 .. a11, each ten copies of the one before."""
    return [f'  a{i}: "' + ("{{ a" + str(i - 1) + " }}") * 10 + '"' for i in range(1, 12)]


def test_template_bomb(tmp_path):
    lines = ["vars:", "  a0: xxxxxxxxxx", *_bomb_vars()]
    p = tmp_path / "bomb.yaml"
    p.write_text(HEAD + "\n".join(lines) + '\nsteps:\n  - C: "{{ a11 }}"\n    S: 250\n')
    for cmd in ("validate", "run"):
        refused([cmd, str(p)], tmp_path, f"{p}:11:7: vars.a7: renders to about 100,000,000 characters")


def test_template_bomb_from_the_command_line_stops_while_rendering(tmp_path):
    lines = ["vars:", *_bomb_vars()]
    p = tmp_path / "bomb.yaml"
    p.write_text(HEAD + "\n".join(lines) + '\nsteps:\n  - C: "{{ a11 }}"\n    S: 250\n')
    refused(["run", str(p), "--var", "a0=xxxxxxxxxx"], tmp_path, "var 'a7': renders to more than 16 MiB")


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_include_of_a_device_or_fifo(tmp_path, target, fifo):
    target = str(fifo) if target == "fifo" else target
    p = tmp_path / "s.yaml"
    p.write_text(HEAD + f"steps:\n  - include: {target}\n")
    what = "a FIFO" if target.endswith("fifo.yaml") else "a device"
    refused(["run", str(p)], tmp_path, f"{p}:4:14: steps[0].include:", f"is {what}, not a regular file")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_scenario_vars_file_and_env_file_that_are_a_device_or_fifo(tmp_path, target, fifo):
    target = str(fifo) if target == "fifo" else target
    ok = tmp_path / "ok.yaml"
    ok.write_text(HEAD + "steps:\n  - S: 220\n")
    refused(["run", target], tmp_path, "not a regular file (a scenario file must be one)")
    refused(["run", "--vars-file", target, str(ok)], tmp_path, "not a regular file (a vars file must be one)")
    refused(["run", "--env-file", target, str(ok)], tmp_path, "not a regular file (an env file must be one)")


def test_yaml_nested_1000_deep(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text(HEAD + "steps:\n  - C: " + "[" * 1000 + "]" * 1000 + "\n")
    for cmd in ("validate", "run"):
        refused([cmd, str(p)], tmp_path, f"{p}:4:", "nests lists and mappings more than 200 levels deep")


def test_a_50_mb_scenario(tmp_path):
    p = tmp_path / "big.yaml"
    step = "  - C: NOOP\n    S: 250\n"
    with p.open("w") as f:
        f.write(HEAD + "steps:\n" + step * (50_000_000 // len(step)))
    r = refused(["validate", str(p)], tmp_path, f"{p}: the file is larger than 16 MiB")
    assert "aliases expanded" not in r.output


def test_many_values_without_aliases_say_so(tmp_path):
    p = tmp_path / "wide.yaml"
    p.write_text(HEAD + "steps: [" + ", ".join(["x"] * 150_000) + "]\n")
    r = refused(["validate", str(p)], tmp_path, f"{p}:3:", "more than 100000 values")
    assert "aliases expanded" not in r.output


def _chain(tmp_path, depth: int, fan: int = 1):
    for i in range(depth):
        body = f"  - include: f{i + 1}.yaml\n" * fan if i < depth - 1 else "  - C: NOOP\n    S: 250\n"
        (tmp_path / f"f{i}.yaml").write_text("steps:\n" + body)
    main = tmp_path / "main.yaml"
    main.write_text(HEAD + "steps:\n  - include: f0.yaml\n")
    return main


def test_include_chain_40_deep(tmp_path):
    main = _chain(tmp_path, 40)
    for cmd in ("validate", "run"):
        refused(
            [cmd, str(main)],
            tmp_path,
            "f31.yaml:2:14: steps[0].include:",
            "includes nested more than 32 deep",
        )


def test_include_fan_out(tmp_path):
    main = _chain(tmp_path, 30, fan=2)
    refused(
        ["run", str(main)],
        tmp_path,
        f"{main}:4:14: steps[0].include: this include expands to about 1,610,612,734 steps",
    )


def test_include_chain_within_the_limit_still_loads(tmp_path):
    main = _chain(tmp_path, 30)
    r = run_mailrun(["validate", str(main)], timeout=60)
    assert r.status == 0, r.output
