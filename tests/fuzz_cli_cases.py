"""Case generator of the CLI fuzz (tests/test_fuzz_cli.py), also runnable as a script that counts outcomes.

A *world* is a folder of inputs a hostile but realistic user could pass: valid and broken HDF5 /
NumPy / PNG files, files whose headers lie, complex data, a malicious pickle posing as a
checkpoint, folders, a FIFO, a private device node, symlinks, hard links. A *case* is an argv of
``invdiff`` drawn from good and bad values of each flag. :func:`run_case` runs it in-process
through :func:`invdiff.cli.main` and classifies the outcome; the property is: exit code 0 or 2,
no traceback, every input file unchanged, no device node / symlink / FIFO replaced.

    python tests/fuzz_cli_cases.py 300       # counts of each outcome over 300 random cases
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import stat
import struct
import sys
import traceback
import zlib
from pathlib import Path

import numpy as np

FINITE_BAD = ["inf", "-inf", "nan", "1e400"]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_world(root: Path) -> dict[str, Path]:
    """Create the input files once; returns name -> path."""
    import h5py

    from invdiff.datasets.phantoms import test_set

    root.mkdir(parents=True, exist_ok=True)
    w: dict[str, Path] = {}
    x = test_set("ct-phantom", 1, 64).numpy()

    def put(name, data: bytes):
        p = root / name
        p.write_bytes(data)
        w[name] = p

    with h5py.File(root / "x.h5", "w") as f:
        f.create_dataset("x", data=x)
    w["x.h5"] = root / "x.h5"
    np.save(root / "x.npy", x[0])
    w["x.npy"] = root / "x.npy"
    with h5py.File(root / "y_bcast.h5", "w") as f:  # broadcastable y: must be refused
        f.create_dataset("y", data=np.zeros((1, 1, 1, 1), np.float32))
    w["y_bcast.h5"] = root / "y_bcast.h5"
    with h5py.File(root / "y_complex.h5", "w") as f:  # complex MRI k-space, one complex channel
        f.create_dataset("y", data=(np.ones((1, 1, 64, 64)) + 1j * np.ones((1, 1, 64, 64))).astype(np.complex64))
    w["y_complex.h5"] = root / "y_complex.h5"
    np.save(root / "x_complex.npy", (x + 1j * x).astype(np.complex64))
    w["x_complex.npy"] = root / "x_complex.npy"
    np.save(root / "x_255.npy", (x * 255).astype(np.uint8))
    w["x_255.npy"] = root / "x_255.npy"
    np.save(root / "x_nan.npy", np.full((1, 64, 64), np.nan, np.float32))
    w["x_nan.npy"] = root / "x_nan.npy"
    np.save(root / "zero.npy", np.zeros((0, 64, 64), np.float32))
    w["zero.npy"] = root / "zero.npy"
    good = (root / "x.h5").read_bytes()
    put("trunc.h5", good[: len(good) // 2])
    put("empty.h5", b"")
    put("empty.npy", b"")
    put("empty.npz", b"")
    npy = (root / "x.npy").read_bytes()
    put("trunc.npy", npy[: len(npy) // 3])
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (2**22, 2**22, 2**21)}).encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    put("huge.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64)
    buf = io.BytesIO()
    np.savez(buf, x=x)
    put("trunc.npz", buf.getvalue()[:200])
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 200_000, 200_000, 8, 0, 0, 0, 0))
    put("bomb.png", png + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + _png_chunk(b"IEND", b""))
    put("garbage.h5", os.urandom(300))
    put("evil.safetensors", pickle.dumps(_Evil(root / "PWNED")))
    put("empty.safetensors", b"")
    put("cfg_ok.json", json.dumps({"name": "tiny", "network": {"name": "mlp", "dim": 2, "hidden": 8, "depth": 1},
                                   "data": {"generator": "gaussian", "params": {"dim": 2}}, "batch_size": 4,
                                   "steps": 2, "warmup": 1}).encode())
    put("cfg_clip.json", json.dumps({"name": "tiny", "network": {"name": "mlp", "dim": 2}, "data": {"generator": "gaussian"},
                                     "grad_clip": -1}).encode())
    put("cfg_nan.json", b'{"name": "tiny", "network": {"name": "mlp", "dim": 2}, "data": {"generator": "gaussian"}, "lr": NaN}')
    put("cfg_list.json", b"[1, 2]")
    put("cfg_bad.json", b"\xff\xfe{")
    put("cfg_net.json", json.dumps({"name": "t", "network": {"name": "nope"}, "data": {"generator": "gaussian"}}).encode())
    put("cfg_gen.json", json.dumps({"name": "t", "network": {"name": "mlp", "dim": 2}, "data": {"generator": "nope"}}).encode())
    put("photo.h5", b"\x89PNG\r\n\x1a\n" + b"\0" * 32)  # a file of another kind under an output name
    put("photo.nc", b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    (root / "adir.h5").mkdir(exist_ok=True)
    w["adir.h5"] = root / "adir.h5"
    fifo = root / "fifo.h5"
    if not fifo.exists():
        os.mkfifo(fifo)
    w["fifo.h5"] = fifo
    if os.geteuid() == 0:
        dev = root / "null.h5"
        if not dev.exists():
            os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        w["null.h5"] = dev
    link = root / "link.h5"
    if not link.is_symlink():
        link.symlink_to(root / "x.h5")
    w["link.h5"] = link
    hard = root / "hard.h5"
    if not hard.exists():
        os.link(root / "x.h5", hard)
    w["hard.h5"] = hard
    run = root / "evilrun"
    run.mkdir(exist_ok=True)
    (run / "state.pt").write_bytes(pickle.dumps(_Evil(root / "PWNED")))
    (run / "state.safetensors").write_bytes(pickle.dumps(_Evil(root / "PWNED")))
    w["evilrun"] = run
    return w


def snapshot(world: dict[str, Path]) -> dict[str, tuple]:
    """(kind, content hash) of every world path (FIFOs and devices are never read)."""
    out = {}
    for name, p in world.items():
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            out[name] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[name] = (stat.S_IFMT(st.st_mode), None)
    return out


def make_case(pick, world: dict[str, Path], tmp: Path) -> list[str]:
    """An argv; ``pick(options)`` chooses one option (hypothesis' draw or random.choice).

    Each flag takes its good value with probability 7/8, else one of its bad values, so that
    most cases have one or two bad values (reaching the deep checks) and some run completely.
    """
    W = {k: str(v) for k, v in world.items()}

    def flag(good, bad):
        return good if pick(list(range(8))) else pick(bad)

    outs = [W["x.h5"], W["hard.h5"], W["link.h5"], W["adir.h5"], W["fifo.h5"], W["photo.h5"],
            str(tmp / "sub" / "deep" / "o.h5"), W["x.npy"] + "/o.h5", "/proc/invdiff-test.h5"] + ([W["null.h5"]] if "null.h5" in W else [])
    device = flag("cpu", ["foo", "cuda", "cuda:7", "meta", "mps", ""])
    cmd = pick(["reconstruct", "reconstruct", "reconstruct", "train", "train", "simulate", "simulate", "bench", "demo"])
    if cmd == "reconstruct":
        inp = flag("x.h5", ["x.npy", "y_bcast.h5", "y_complex.h5", "x_complex.npy", "x_255.npy", "x_nan.npy", "zero.npy",
                            "trunc.h5", "empty.h5", "empty.npy", "empty.npz", "trunc.npy", "huge.npy", "trunc.npz", "bomb.png",
                            "garbage.h5", "adir.h5", "fifo.h5", "link.h5", "missing.h5"])
        op, prior = flag(("ct-sparse-view", "ct-phantom-64"), [
            ("mri-4x", "mri-phantom-64"), ("mri-4x", "ct-phantom-64"), ("blur-gaussian", "ct-phantom-64"), ("nope", "ct-phantom-64"),
            ("ct-sparse-view", "nope"), ("ct-sparse-view", W["evil.safetensors"]), ("ct-sparse-view", W["empty.safetensors"])])
        argv = ["reconstruct", "--operator", op, "--prior", prior,
                "--sampler", flag(pick(["dps", "red-diff", "smc", "dds", "twisted-smc"]), ["bogus", "", "masked-smc"]),
                "--input", W.get(inp, str(tmp / inp)), "--output", flag(str(tmp / "out.h5"), outs),
                "--operator-args", flag('{"views": 8}' if op != "mri-4x" else "{}",
                                        ["[1]", "nan", '{"views": -1}', '{"sigma": Infinity}', '{"sigma": -0.1}', '{"bogus": 1}',
                                         '{"size": 0}', '{"size": "a"}', '{"views": 0}', "null", '{"size": 32}']),
                "--steps", flag(pick(["1", "2"]), ["0", "-3"]), "--samples", flag(pick(["1", "2"]), ["0", "-1"]),
                "--sampler-args", flag("{}", ['{"zeta": Infinity}', '{"zeta": NaN}', '{"zeta": -1}', '{"bogus": 1}', "[1]", "{",
                                              '{"steps": 0}', '{"lam_ref": -1}', '{"progress": "no"}']),
                "--seed", flag("0", ["-1", str(2**70)]), "--device", device]
        if pick([False, True]):
            argv.append("--overwrite")
        return argv
    if cmd == "train":
        cfg = flag("cfg_ok.json", ["cfg_clip.json", "cfg_nan.json", "cfg_list.json", "cfg_bad.json", "cfg_net.json",
                                   "cfg_gen.json", "missing.json", "adir.h5"])
        out = flag(str(tmp / "run"), [W["evilrun"], W["x.h5"], W["link.h5"], W["x.npy"] + "/run", "/proc/invdiff-run"])
        argv = ["train", "--config", W.get(cfg, str(tmp / cfg)), "--out", out, "--no-progress", "--device", device,
                "--steps", flag(pick(["1", "2"]), ["0", "-1"])]
        if pick([False, False, True]):
            argv.append("--resume")
        return argv
    if cmd == "simulate":
        return ["simulate", flag("heat", ["burgers", "nope"]), "--n", flag(pick(["1", "2"]), ["0", "-1"]),
                "--out", flag(str(tmp / "s.nc"), [W["photo.nc"], W["x.h5"], W["adir.h5"], W["link.h5"], W["fifo.h5"]]),
                "--chunk", flag("1", ["0", "-2"]), "--resolution", flag(pick(["16", "8x8"]), ["3", "x", "-4", "0x8"]),
                "--frames", flag("3", ["1", "0"]), "--t-final", flag("0.5", ["0", "-1"] + FINITE_BAD),
                "--device", device, "--no-progress"]
    if cmd == "bench":  # only cases that fail fast (a valid bench runs for minutes)
        return ["bench", pick(["solvers", "nope"]), "--out", pick([W["x.h5"], W["link.h5"], "/proc/invdiff-bench"]),
                "--device", device, "--quick"]
    return ["demo", "--quick", "--out", pick([W["x.h5"], W["link.h5"], str(tmp / "demo")]), "--tasks", pick(["ct", "xyz", ""]),
            "--images", pick(["0", "-1", "1"]), "--threads", pick(["-1", "0", "1"]), "--device", pick(["foo", "cuda"]), "--no-figure"]


def _declared_output(argv: list[str]) -> str | None:
    """The output a case names when it is not also its input (replacing such a file is allowed)."""
    opts = dict(zip(argv, argv[1:]))
    out = opts.get("--output") or opts.get("--out")
    inp = opts.get("--input")
    if out is None or (inp is not None and os.path.exists(inp) and os.path.exists(out) and os.path.samefile(inp, out)):
        return None
    return out


def _must_fail(argv: list[str]) -> bool:
    """Inputs that can only give a meaningless result: a broadcastable y, NaN or empty data, complex
    data for a real (1-channel) operator."""
    opts = dict(zip(argv, argv[1:]))
    inp = Path(opts.get("--input", "")).name
    if argv[0] != "reconstruct":
        return False
    return inp in ("y_bcast.h5", "x_nan.npy", "zero.npy") or (inp == "x_complex.npy" and opts.get("--operator") != "mri-4x")


def run_case(argv: list[str], world: dict[str, Path]) -> tuple[str, str]:
    """(outcome, detail): outcome in ok, user-error (exit 2), bad-exit, traceback, damaged, executed."""
    from invdiff.cli import main

    before = snapshot(world)
    err = io.StringIO()
    outcome, detail = None, ""
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as exc:  # noqa: BLE001 - what the fuzz looks for
            outcome, detail = "traceback", "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
            rc = None
    text = err.getvalue()
    if outcome is None and "Traceback" in text:
        outcome, detail = "traceback", text[-300:]
    elif outcome is None and rc not in (0, 2):
        outcome, detail = "bad-exit", f"rc={rc} {text[-200:]}"
    after = snapshot(world)
    marker = world["x.h5"].parent / "PWNED"
    if marker.exists():
        marker.unlink()
        outcome, detail = "executed", "a pickle ran"
    elif after != before:
        allowed = _declared_output(argv)
        changed = [k for k in before if before[k] != after.get(k)
                   and not (str(world[k]) == allowed and before[k][0] == "file" and after.get(k, ("?",))[0] == "file")]
        if changed:
            outcome, detail = "damaged", f"changed: {changed}"
    if outcome is None and rc == 0 and _must_fail(argv):
        outcome, detail = "silent-wrong", "a known-bad input ran to exit 0"
    if outcome is None:
        outcome = "ok" if rc == 0 else "user-error"
        if rc == 2 and text.strip() and not text.strip().splitlines()[-1].startswith(("invdiff", "usage")):
            outcome, detail = "bad-message", text[-200:]
    return outcome, detail


class _Hang(BaseException):
    pass


def _hang(signum, frame):
    raise _Hang()


if __name__ == "__main__":  # pragma: no cover
    import random
    import signal
    import tempfile
    from collections import Counter

    import torch

    torch.set_num_threads(1)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    base = Path(tempfile.mkdtemp(prefix="invdiff-fuzz-"))
    world = make_world(base / "world")
    counts, examples = Counter(), {}
    for i in range(n):
        tmp = base / f"case{i}"
        tmp.mkdir()
        argv = make_case(rng.choice, world, tmp)
        signal.signal(signal.SIGALRM, _hang)
        signal.alarm(120)  # a read of a FIFO blocks forever: count it as a hang
        try:
            outcome, detail = run_case(argv, world)
        except _Hang:
            outcome, detail = "hang", "blocked for 120 s"
        signal.alarm(0)
        counts[outcome] += 1
        if outcome in ("damaged", "executed"):  # later cases get an intact world
            world = make_world(base / f"world{i}")
        if outcome not in ("ok", "user-error"):
            examples.setdefault(detail.splitlines()[-1][:120] if detail else outcome, " ".join(argv))
    print(dict(counts))
    for d, a in examples.items():
        print("-", d, "\n   ", a)
