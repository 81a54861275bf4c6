"""The ``invdiff`` command line.

Each subcommand lives in its own module (``invdiff/cli/<name>.py``) with
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Heavy imports (torch, deepinv) happen inside ``func`` so that ``invdiff --help`` is instant.
Unknown subcommands and bad arguments exit with code 2 and a message (argparse's convention).

Before a command runs, :func:`main` checks what every command shares, so that bad input fails
in a second, not after minutes of work: numeric flags must be finite, ``--seed`` must fit a
generator, ``--device`` must exist here, and each output named in :data:`OUTPUTS` must be a
writable location that is neither an input, a symlink, a device node nor (without
``--overwrite``) a file of another kind (:func:`invdiff.utils.io.check_output_path`). Errors
of the user's making (bad values, unreadable files, unwritable folders) end as one line
``invdiff CMD: error: ...`` with exit code 2; ``INVDIFF_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys

SUBCOMMANDS = ("demo", "reconstruct", "train", "simulate", "bench")

# Output flags of each command: (flag attribute, "file" or "dir", input flag attributes).
# A command with a "file" output gets an ``--overwrite`` flag.
OUTPUTS = {
    "reconstruct": ("output", "file", ("input",)),
    "simulate": ("out", "file", ()),
    "train": ("out", "dir", ("config",)),
    "demo": ("out", "dir", ()),
    "bench": ("out", "dir", ()),
}


def build_parser() -> argparse.ArgumentParser:
    from invdiff import __version__

    parser = argparse.ArgumentParser(
        prog="invdiff",
        description="Inverse problems with diffusion priors: operators, priors, posterior samplers, PDE surrogates.",
    )
    parser.add_argument("--version", action="version", version=f"invdiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"invdiff.cli.{name}").register(sub)
    for name, (_, kind, _) in OUTPUTS.items():
        p = sub.choices.get(name)
        if p is not None and kind == "file" and "--overwrite" not in p._option_string_actions:
            p.add_argument("--overwrite", action="store_true",
                           help="replace an existing output file even if it is of another kind (never an input, a symlink or a device)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """The checks shared by every command (see the module docstring); raises ``ValueError``."""
    for key, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{key.replace('_', '-')}: expected a finite number, got {value}")
    seed = getattr(args, "seed", None)
    if isinstance(seed, int) and not 0 <= seed < 2**63:
        raise ValueError(f"--seed: expected an integer in [0, 2^63), got {seed}")
    threads = getattr(args, "threads", None)
    if isinstance(threads, int) and threads < 1:
        raise ValueError(f"--threads: expected >= 1, got {threads}")
    if getattr(args, "device", None) is not None:
        from invdiff.utils.devices import check_device

        check_device(args.device)
    spec = OUTPUTS.get(args.command)
    if spec is not None and getattr(args, spec[0], None) is not None:
        from invdiff.utils.io import check_output_dir, check_output_path

        flag, kind, inputs = spec
        target = getattr(args, flag)
        if kind == "file":
            check_output_path(target, inputs=[getattr(args, i, None) for i in inputs],
                              overwrite=getattr(args, "overwrite", False), what=f"--{flag}")
        else:
            check_output_dir(target, what=f"--{flag}")


def _user_error(exc: BaseException) -> str | None:
    """The one-line message of an error of the user's making, or None for a bug."""
    import zipfile

    if isinstance(exc, (ValueError, TypeError, FileNotFoundError, EOFError, FloatingPointError, zipfile.BadZipFile)):
        return str(exc)
    if isinstance(exc, OSError):  # permissions, full disk, read-only file system, not a folder, ...
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{':' + where if where else ''}"
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))):
        return f"not enough memory ({str(exc).splitlines()[0][:200] if str(exc) else 'MemoryError'}); use fewer samples or a smaller size"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("INVDIFF_DEBUG", "") not in ("", "0")
    import warnings

    def one_line(message, category, filename, lineno, file=None, line=None):  # warnings like the errors: one line each
        print(f"invdiff {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    catcher = warnings.catch_warnings()
    catcher.__enter__()
    if not debug:
        warnings.showwarning = one_line
    try:
        check_args(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"invdiff {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        msg = _user_error(exc)
        if msg is None or debug:
            raise
        msg = " ".join(msg.split()) or type(exc).__name__  # one line
        print(f"invdiff {args.command}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        catcher.__exit__(None, None, None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
