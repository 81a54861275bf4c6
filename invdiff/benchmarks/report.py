"""The Markdown report of ``invdiff bench all``: machine, versions, headline table, tables, plots.

Nothing here knows a particular benchmark: columns are recognised by name.

- a *method* column: ``method``, ``sampler``, ``estimator`` or ``model``;
- a *quality* column (first found): ``psnr`` / ``psnr_db`` / ``psnr_vol`` (higher is better), then errors where lower is better
  (``nmse_db``, ``rel_l2_traj``, ``tv``, ``sw_ratio``, ``mode_tv``, ``rel_rmse``, ``rel_rmse_vs_ref``,
  ``rel_l2``, ``max_error``);
- a *cost* column: NFE (``nfe``, ``nfe_total``, ``denoiser_calls``) and time (``seconds``, ``time_s``,
  ``cpu_seconds``, ``cpu_s``, ``wall_s``, ``cpu_seconds_per_problem``);
- rows whose method names a reference (exact, floor, oracle, reference, truth) are never the headline's best method.
- a *task* column: ``task``; channel rows (``snr_db``; the headline keeps 0, 10 and 20 dB) and PDE
  rows (``sensors``) make their own.

The headline answers, per task: which invdiff method is best by that quality, at what cost, and
what deepinv's nearest method (a ``method`` containing "deepinv", at the same NFE when there is
one) reaches on the same prior and data.

>>> rows = [dict(task="ct", method="DPS", nfe=10, psnr=20.0, seconds=1.0),
...         dict(task="ct", method="deepinv DPS", nfe=10, psnr=18.0, seconds=2.0)]
>>> h = headline({"t": {"tab": rows}})
>>> h[0]["best invdiff"], h[0]["deepinv nearest"]
('DPS', 'deepinv DPS')
"""
from __future__ import annotations

import math
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["machine", "headline", "figures", "render", "write_report"]

METHOD_COLS = ("method", "sampler", "estimator", "model")
QUALITY = (("psnr", True), ("psnr_db", True), ("psnr_vol", True), ("nmse_db", False), ("rel_l2_traj", False), ("tv", False), ("sw_ratio", False),
           ("mode_tv", False), ("rel_rmse", False), ("rel_rmse_vs_ref", False), ("rel_l2", False), ("max_error", False))
NFE_COLS = ("nfe", "nfe_total", "denoiser_calls")
TIME_COLS = ("seconds", "time_s", "cpu_seconds", "cpu_s", "wall_s", "cpu_seconds_per_problem", "ms_per_channel")
#: channel sweeps: the SNRs (dB) that make the headline (all of them stay in the tables)
HEADLINE_SNRS = (0.0, 10.0, 20.0)
#: rows that are references, not methods a user would run (never picked as the best method)
REFERENCE_WORDS = ("exact", "floor", "oracle", "reference", "truth")


def _num(v) -> float | None:
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _first(cols, names) -> str | None:
    return next((c for c in names if c in cols), None)


def _columns(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r))


def _quality(cols) -> tuple[str, bool] | None:
    return next(((c, hi) for c, hi in QUALITY if c in cols), None)


def _task(row: dict) -> str | None:
    if "task" in row:
        return str(row["task"])
    if "snr_db" in row:
        return f"channel estimation, SNR {row['snr_db']} dB"
    if "sensors" in row:
        return f"PDE inverse, {row['sensors']} sensors"
    return None


def machine_commit() -> str:
    """The git commit of the installed invdiff checkout, marked when the working tree has uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "unknown (not a git checkout)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def machine(device: str = "cpu") -> dict:
    """The machine, the versions, the date and the git commit, as ``{field: value}``."""
    import torch

    import invdiff

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    try:
        import deepinv

        dinv_version = deepinv.__version__
    except Exception:  # pragma: no cover - deepinv is a dependency
        dinv_version = "not installed"
    return {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "git commit": machine_commit(),
        "CPU": cpu,
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "GPU": gpu,
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deepinv": dinv_version,
        "invdiff": invdiff.__version__,
    }


def headline(tables: dict[str, dict[str, list[dict]]]) -> list[dict]:
    """Per (task, table): the best invdiff method, its quality and cost, and deepinv's nearest method."""
    out = []
    for target, tabs in tables.items():
        for name, rows in tabs.items():
            rows = [r for r in rows if not r.get("error")]
            cols = _columns(rows)
            mcol, q = _first(cols, METHOD_COLS), _quality(cols)
            if mcol is None or q is None:
                continue
            qcol, higher = q
            ncol, tcol = _first(cols, NFE_COLS), _first(cols, TIME_COLS)
            by_task: dict[str, list[dict]] = {}
            for r in rows:
                task = _task(r)
                if "task" not in r and "snr_db" in r and _num(r["snr_db"]) not in HEADLINE_SNRS:
                    continue
                if task is not None and _num(r.get(qcol)) is not None:
                    by_task.setdefault(task, []).append(r)
            for task, rs in by_task.items():
                key = (lambda r: _num(r[qcol])) if higher else (lambda r: -_num(r[qcol]))
                ours = [r for r in rs if "deepinv" not in str(r[mcol]).lower()
                        and not any(w in str(r[mcol]).lower() for w in REFERENCE_WORDS)]
                theirs = [r for r in rs if "deepinv" in str(r[mcol]).lower()]
                if not ours or (len(ours) > 1 and len({_num(r[qcol]) for r in ours}) == 1):
                    continue  # no method, or every method ties (e.g. all at the worst TV of 1): no winner to report
                best = max(ours, key=key)
                def cost(r):
                    v = r.get(tcol, "") if tcol else ""
                    return f"{v:.3g} {tcol}" if isinstance(v, float) else (f"{v} {tcol}" if v not in ("", None) else "")

                row = {"task": task, "table": f"{target}/{name}", "quality": qcol + (" (higher better)" if higher else " (lower better)"),
                       "best invdiff": best[mcol], "value": best[qcol],
                       "NFE": best.get(ncol, "") if ncol else "", "time": cost(best),
                       "deepinv nearest": "", "deepinv value": "", "deepinv NFE": "", "deepinv time": ""}
                if theirs:
                    same = [r for r in theirs if ncol and r.get(ncol) == best.get(ncol)]
                    near = max(same or theirs, key=key)
                    row.update({"deepinv nearest": near[mcol], "deepinv value": near[qcol],
                                "deepinv NFE": near.get(ncol, "") if ncol else "", "deepinv time": cost(near)})
                elif "baseline" in cols or target in ("channel", "pde-inverse"):
                    row["deepinv nearest"] = "(no deepinv method for this task)"
                out.append(row)
    return out


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from invdiff.utils.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _line_plot(rows, xcol, qcol, mcol, higher, title, path) -> bool:
    import matplotlib.pyplot as plt

    def facet(r):
        return _task(r) or (f"d = {r['d']}" if "d" in r else f"d_x = {r['d_x']}" if "d_x" in r else "")

    pts = [r for r in rows if _num(r.get(xcol)) is not None and _num(r.get(qcol)) is not None
           and not (mcol and any(w in str(r.get(mcol, "")).lower() for w in REFERENCE_WORDS))]
    if len(pts) < 2 or len({_num(r[xcol]) for r in pts}) < 2:
        return False
    tasks = list(dict.fromkeys(facet(r) for r in pts))[:4]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        groups: dict[str, list] = {}
        for r in pts:
            if facet(r) == task:
                label = " ".join(str(r[c]) for c in ("library", mcol, "N") if c and c in r and r[c] not in ("", None))
                groups.setdefault(label, []).append((_num(r[xcol]), _num(r[qcol])))
        for label, xy in groups.items():
            xy.sort()
            ax.plot([a for a, _ in xy], [b for _, b in xy], marker="o", ms=3, label=label[:40])
        if all(_num(r[xcol]) > 0 for r in pts):
            ax.set_xscale("log")
        if not higher and all(_num(r[qcol]) > 0 for r in pts):
            ax.set_yscale("log")
        ax.set_xlabel(xcol)
        ax.set_ylabel(qcol)
        ax.set_title(task or title, fontsize=8)
        ax.legend(fontsize=5, ncol=2 if len(groups) > 8 else 1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return True


def _bar_plot(rows, cols, label_cols, ref_lines, title, path) -> bool:
    import matplotlib.pyplot as plt

    pts = [r for r in rows if any(_num(r.get(c)) is not None for c in cols)]
    if not pts:
        return False
    labels = [" / ".join(str(r[c]) for c in label_cols if c in r and r[c] not in ("", None))[:50] for r in pts]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.2 * len(pts) * len(cols) + 1.2)))
    h = 0.8 / len(cols)
    for j, c in enumerate(cols):
        se = [_num(r.get(c + "_se")) or 0.0 for r in pts]  # a standard-error column beside it: error bars
        ax.barh([i + j * h for i in range(len(pts))], [_num(r.get(c)) or 0.0 for r in pts], height=h, label=c,
                xerr=se if any(se) else None)
    for (v, name), ls in zip(ref_lines, ("--", ":")):
        ax.axvline(v, color="k", ls=ls, lw=0.8, label=name)
    ax.set_yticks([i + 0.4 - h / 2 for i in range(len(pts))])
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.legend(fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.subplots_adjust(left=0.36, right=0.97)
    _save(fig, path)
    return True


def figures(target: str, name: str, rows: list[dict], fig_dir: Path) -> list[tuple[str, Path]]:
    """Plots of one table where its columns allow; returns ``(caption, path)`` pairs."""
    rows = [r for r in rows if not r.get("error")]
    cols = _columns(rows)
    mcol, q = _first(cols, METHOD_COLS), _quality(cols)
    stem = f"{target}-{name}".replace("/", "_").replace(" ", "_")
    made = []
    if q is not None:
        qcol, higher = q
        ncol, tcol = _first(cols, NFE_COLS), _first(cols, TIME_COLS)
        if ncol and _line_plot(rows, ncol, qcol, mcol, higher, f"{name}: {qcol} against NFE", fig_dir / f"{stem}-nfe.png"):
            made.append((f"{name}: {qcol} against NFE", fig_dir / f"{stem}-nfe.png"))
        if tcol and _line_plot(rows, tcol, qcol, mcol, higher, f"{name}: {qcol} against {tcol}", fig_dir / f"{stem}-time.png"):
            made.append((f"{name}: {qcol} against time ({tcol})", fig_dir / f"{stem}-time.png"))
    ratios = [c for c in cols if c.startswith("ratio ") and not c.endswith("layout")]
    if ratios and _bar_plot(rows, ratios, ("operator", "x_shape"), [(1.0, "floor"), (1.2, "1.2")],
                            f"{name}: time / floor", fig_dir / f"{stem}-floor.png"):
        made.append((f"{name}: operator time against its floor (1 = the floor)", fig_dir / f"{stem}-floor.png"))
    cov = [c for c in cols if "coverage" in c and not c.endswith(("_se", "_sem"))
           and any(_num(r.get(c)) is not None for r in rows)][:2]
    keys = ("task", "d_x", "d_y", "d", mcol, "N")
    if cov and mcol and _bar_plot(rows, cov, keys, [(0.9, "0.9")], f"{name}: coverage",
                                  fig_dir / f"{stem}-coverage.png"):
        made.append((f"{name}: coverage of credible intervals (nominal level dashed)", fig_dir / f"{stem}-coverage.png"))
    return made


def _run_minutes(results: list[dict], total_seconds: float) -> float:
    """Minutes of run time: this invocation's, or the targets' own recorded times when some were read back."""
    recorded = sum(r["seconds"] for r in results if isinstance(r.get("seconds"), (int, float)))
    return max(recorded, total_seconds) / 60


def _short(commit: str) -> str:
    """A full hash shortened to 12 characters (a marked or ranged commit kept as written)."""
    import re

    head = re.match(r"[0-9a-f]{40}", commit)
    return commit[:12] + commit[40:] if head else commit


def render(results: list[dict], info: dict, fig_dir: Path, rel_to: Path, quick: bool, total_seconds: float,
           planned: int | None = None) -> str:
    """The report's Markdown text (figures written under ``fig_dir``, linked relative to ``rel_to``)."""
    from invdiff.benchmarks.table import markdown

    back = [r["target"] for r in results if str(r.get("status", "")).endswith("(read back)")]
    partial = [r["target"] for r in results if str(r.get("status", "")).startswith("partial")]
    mode = "quick run (`--quick`: small sizes, few steps; numbers are smoke-test quality, not the full measurement)" if quick \
        else "full run"
    lines = ["# invdiff benchmark report", "",
             f"`invdiff bench all{' --quick' if quick else ''}`: {mode}; {len(results)} targets in {_run_minutes(results, total_seconds):.1f} minutes"
             + (f" (**incomplete: {len(results)} of {planned} targets so far**)." if planned and len(results) < planned else ".")
             + (f" **Partial** (some tables missing, see the targets table): {', '.join(partial)}." if partial else "")
             + (f" {len(back)} of them ({', '.join(back)}) were read back from earlier runs in the same folder (`--resume`): "
                "the targets table gives each one's start time and commit." if back else ""), "",
             "## Machine and versions", "", markdown([{"field": k, "value": v} for k, v in info.items()]), ""]
    tables = {r["target"]: r["tables"] for r in results}
    head = headline(tables)
    lines += ["## Headline: for each task, which method, what quality, at what cost, against deepinv", "",
              "Best invdiff method per task and table by the table's quality column; deepinv's nearest method on the "
              "same prior and data (same NFE where the table has it) beside it. Time columns are those of the table "
              "(seconds or CPU seconds on this machine).", "",
              markdown(head) if head else "(no table with a task, a method and a quality column)", ""]
    lines += ["## Targets", "", "Each target's start time (UTC) and the commit it ran at (a run resumed with `--resume` "
              "spans several starts).", "",
              markdown([dict(target=r["target"], status=r["status"], seconds=r["seconds"], started=r.get("started", ""),
                             commit=_short(str(r.get("commit", ""))), tables=", ".join(r["tables"]) or "-") for r in results]), ""]
    for r in results:
        lines += [f"## {r['target']}", ""]
        if r["status"] == "failed":
            lines += [f"**Failed**: `{r['error'][:300]}`", "", "```", r.get("traceback", "").rstrip(), "```", ""]
            continue
        for name, rows in r["tables"].items():
            lines += [f"### {name}", "", markdown(rows), ""]
            for caption, path in figures(r["target"], name, rows, fig_dir):
                lines += [f"![{caption}]({os.path.relpath(path, rel_to)})", ""]
    return "\n".join(lines) + "\n"


def write_report(results: list[dict], out_dir, quick: bool, device: str = "cpu", total_seconds: float = 0.0,
                 planned: int | None = None) -> Path:
    """Write ``out_dir/report.md`` (figures in ``out_dir/figures/``); return its path."""
    import matplotlib

    matplotlib.use("Agg")
    from invdiff.utils.io import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = render(results, machine(device), out / "figures", out, quick, total_seconds, planned)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(text)
    return out / "report.md"
