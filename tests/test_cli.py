"""The `invdiff` entry point: help, version, and exit code 2 with a message on bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest

from invdiff.cli import SUBCOMMANDS, main


def _run(*args):
    return subprocess.run([sys.executable, "-m", "invdiff", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    out = _run("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: invdiff " + name in capsys.readouterr().out


def test_unknown_subcommand_exits_2_with_message():
    out = _run("frobnicate")
    assert out.returncode == 2
    assert "invalid choice: 'frobnicate'" in out.stderr


def test_bad_bench_target_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "nonsense"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_version():
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.startswith("invdiff ")
