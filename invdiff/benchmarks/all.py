"""`invdiff bench all`: run every benchmark target and write one Markdown report.

Each target of ``invdiff bench`` (all of ``TARGETS`` except ``all``; with ``--quick`` each in its
quick mode) runs in turn, in this process; a target that raises is reported (its error and the
end of its traceback) and the others still run. Every table is written as Markdown + CSV under
``OUT/<target>/``, exactly as ``invdiff bench <target>`` would, and ``OUT/report.md`` gathers:

- the machine (CPU model, cores, torch threads, GPU), the versions (python, torch, deepinv,
  invdiff), the date and the git commit;
- a headline table: for each task, the best invdiff method by quality, its cost (NFE, seconds),
  and deepinv's nearest method on the same prior (same NFE where the table has one);
- every table of every target, with plots made from the rows where the columns allow (quality
  against NFE and against time, operator time against its floor, coverage against its nominal
  level): :mod:`invdiff.benchmarks.report`.

The report is rewritten after each target, so an interrupted run leaves the report of the targets
that finished. Each finished target leaves ``OUT/<target>/run.json`` (status, seconds, mode, start
time and git commit), which the report lists per target. ``resume=True`` (``invdiff bench all
--resume``) reads back every target whose ``run.json`` says it finished in the same mode instead of
rerunning it, so a full run can be spread over several sessions and still say when and at which
commit each table was measured; ``report_only=True`` (``--report-only``) runs nothing and rewrites
the report of the targets finished so far. ``INVDIFF_BENCH_ALL_TARGETS=a,b`` runs a subset.
The function returns the summary table (one row per target), which the CLI also writes as
``OUT/bench_all.md``.

A target too long for one session runs table by table (``INVDIFF_BENCH_TABLES=t1`` with
``INVDIFF_BENCH_ALL_TARGETS=<target>``, one ``--out`` folder per part, in parallel or over
sessions); :func:`merge_parts` (``python -m invdiff.benchmarks.all merge DEST TARGET T1,T2,.. PART..``)
gathers the parts into ``DEST/<target>/`` with one ``run.json`` that records each table's commit,
start time and seconds, and says ``ok`` only when every expected table is there (``partial``
otherwise, which ``--resume`` reruns).

>>> from invdiff.benchmarks.all import normalise
>>> list(normalise("pde", [{"a": 1}]))
['pde']
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

__all__ = ["run", "run_targets", "normalise", "load_results", "finished", "merge_parts"]

RECORD = "run.json"


def normalise(target: str, tables) -> dict[str, list[dict]]:
    """A target's return value as ``{table_name: rows}`` (a bare list is one table named after the target)."""
    if tables is None:
        return {}
    if isinstance(tables, list):
        return {target: tables}
    if isinstance(tables, dict):
        return {str(k): list(v) for k, v in tables.items()}
    raise TypeError(f"benchmark {target!r}: expected rows (list of dicts) or {{name: rows}}, got {type(tables).__name__}")


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _record(folder: Path) -> dict:
    import json

    try:
        record = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def finished(out_dir: str | os.PathLike, target: str, quick: bool, skipped: bool = False, partial: bool = False) -> bool:
    """Whether ``OUT/<target>/run.json`` records a successful run of ``target`` in this mode (quick or full);
    with ``skipped``, a target that skipped itself (e.g. ``gpu`` without a GPU) counts too, with ``partial``
    one merged from some of its tables (:func:`merge_parts`)."""
    record = _record(Path(out_dir) / target)
    status = str(record.get("status", ""))
    ok = status == "ok" or (skipped and status.startswith("skipped")) or (partial and status.startswith("partial"))
    return ok and record.get("quick") is quick


def load_results(out_dir: str | os.PathLike, targets: list[str]) -> list[dict]:
    """The results of targets already run, read back from ``OUT/<target>/*.csv`` (to rebuild a report
    without rerunning them; numbers are parsed back from the CSV text), with the seconds, start time and
    commit of their ``run.json`` when there is one. Targets without a folder are skipped."""
    import csv

    results = []
    for target in targets:
        folder = Path(out_dir) / target
        if not folder.is_dir():
            continue
        tables = {}
        for path in sorted(folder.glob("*.csv")):
            with open(path, newline="") as f:
                tables[path.stem] = [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]
        record = _record(folder)
        status = record.get("status", "ok")
        results.append(dict(target=target, tables=tables, status=f"{status} (read back)", seconds=record.get("seconds", ""),
                            started=record.get("started", ""), commit=record.get("commit", "")))
    return results


def _default_targets() -> list[str]:
    # The CLI owns the list of targets; read it lazily (the CLI imports this module, not the reverse, at import time).
    from invdiff.cli.bench import TARGETS

    return [t for t in TARGETS if t != "all"]


def run_targets(targets: list[str], out_dir: str | os.PathLike, quick: bool, device: str, runner=None,
                on_result=None) -> list[dict]:
    """Run each target; return one result per target: ``target``, ``status`` (ok / failed / skipped),
    ``seconds``, ``tables`` (``{name: rows}``) and, when it failed, ``error`` and ``traceback``.

    ``runner(target, out_dir, quick, device)`` defaults to importing ``invdiff.benchmarks.<target>``
    (hyphens become underscores, as in ``invdiff bench``) and calling its ``run``;
    ``on_result(results_so_far)`` is called after each target.
    """
    import importlib

    from invdiff.benchmarks.table import write_table

    def default_runner(target, out, quick, device):
        module = importlib.import_module(f"invdiff.benchmarks.{target.replace('-', '_')}")
        return module.run(out_dir=str(out), quick=quick, device=device)

    runner = runner or default_runner
    commit = _commit()
    results = []
    for target in targets:
        out = Path(out_dir) / target
        print(f"[bench all] {target} ...", flush=True)
        t0 = time.perf_counter()
        res = dict(target=target, tables={}, started=_now(), commit=commit)
        try:
            res["tables"] = normalise(target, runner(target, out, quick, device))
            for name, rows in res["tables"].items():
                write_table(rows, out, name)
            res["status"] = "ok" if res["tables"] else "skipped (no table)"
        except Exception as err:  # a failing target is reported, the others still run
            res["status"] = "failed"
            res["error"] = f"{type(err).__name__}: {err}"
            res["traceback"] = "".join(traceback.format_exception(err)[-6:])
        res["seconds"] = round(time.perf_counter() - t0, 1)
        _write_record(out, res, quick, device)
        print(f"[bench all] {target}: {res['status']} in {res['seconds']} s", flush=True)
        results.append(res)
        if on_result is not None:
            on_result(results)
    return results


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")


def _commit() -> str:
    from invdiff.benchmarks.report import machine_commit

    return machine_commit()


def _write_record(folder: Path, res: dict, quick: bool, device: str) -> None:
    import json

    from invdiff.utils.io import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    record = {k: res[k] for k in ("target", "status", "seconds", "started", "commit")}
    record.update(quick=quick, device=device)
    with atomic_path(folder / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def merge_parts(dest: str | os.PathLike, target: str, expected: list[str], parts: list[str | os.PathLike]) -> dict:
    """Gather the table-by-table runs ``parts`` (each a ``bench all --out PART`` folder holding
    ``PART/<target>/``) into ``DEST/<target>/``: their files (tables, figures) are copied, later parts
    winning, and ``run.json`` is written with per-table records (``tables``: name -> commit, started,
    seconds), the commits and start times joined, the seconds summed, and ``status`` ``ok`` when every
    name of ``expected`` has a table, else ``partial (missing: ...)``. Only parts whose own ``run.json``
    says ``ok`` are used, and all must be in the same mode (quick or full). Returns the record."""
    import json
    import shutil

    from invdiff.utils.io import atomic_path

    out = Path(dest) / target
    records, modes = {}, set()
    for part in parts:
        folder = Path(part) / target
        rec = _record(folder)
        if rec.get("status") != "ok":
            raise ValueError(f"{folder}: expected a finished run (run.json status ok), got {rec.get('status', 'no run.json')!r}")
        modes.add((rec.get("quick"), rec.get("device")))
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name != RECORD:
                shutil.copy2(f, out / f.name)
        for table in sorted(p.stem for p in folder.glob("*.csv")):
            records[table] = {k: rec.get(k, "") for k in ("commit", "started", "seconds")}
    if len(modes) != 1:
        raise ValueError(f"merge_parts: the parts must share one mode and device, got {sorted(map(str, modes))}")
    (quick, device), = modes
    missing = [t for t in expected if t not in records]
    record = dict(target=target, status="ok" if not missing else f"partial (missing: {', '.join(missing)})",
                  seconds=round(sum(float(r["seconds"] or 0) for r in records.values()), 1),
                  started=", ".join(sorted({str(r["started"]) for r in records.values()})),
                  commit=", ".join(sorted({str(r["commit"])[:12] for r in records.values()})),
                  quick=quick, device=device, tables=records)
    with atomic_path(out / RECORD) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return record


def run(out_dir: str, quick: bool, device: str, targets: list[str] | None = None,
        resume: bool = False, report_only: bool = False) -> dict[str, list[dict]]:
    """Run the targets (default: every target of ``invdiff bench`` but ``all``) and write ``OUT/report.md``;
    with ``resume``, targets that already finished in ``out_dir`` in this mode are read back, not rerun;
    with ``report_only``, nothing runs: the report of the finished targets is rewritten (marked incomplete
    if some have not finished)."""
    from invdiff.benchmarks.report import write_report

    if targets is None:
        env = os.environ.get("INVDIFF_BENCH_ALL_TARGETS", "")
        known = _default_targets()
        targets = [t.strip() for t in env.split(",") if t.strip()] or known
        unknown = sorted(set(targets) - set(known))
        if unknown:
            raise ValueError(f"INVDIFF_BENCH_ALL_TARGETS: unknown target(s) {unknown}; expected names from {known}")
    started = time.perf_counter()

    def report(results):  # after every target, so that an interrupted run still leaves the report of what finished
        return write_report(results, out_dir, quick=quick, device=device, total_seconds=time.perf_counter() - started,
                            planned=len(targets))

    done = [t for t in targets
            if (resume or report_only) and finished(out_dir, t, quick, skipped=report_only, partial=report_only)]
    if done:
        print(f"[bench all] --resume: reading back {', '.join(done)}", flush=True)
    earlier = {r["target"]: r for r in load_results(out_dir, done)}

    def in_order(new):
        by_target = {**earlier, **{r["target"]: r for r in new}}
        return [by_target[t] for t in targets if t in by_target]

    todo = [] if report_only else [t for t in targets if t not in earlier]
    results = in_order(run_targets(todo, out_dir, quick, device, on_result=lambda new: report(in_order(new))))
    path = report(results)
    print(f"[bench all] report: {path}", flush=True)
    summary = [dict(target=r["target"], status=r["status"], seconds=r["seconds"], tables=", ".join(r["tables"]),
                    error=r.get("error", "")[:160]) for r in results]
    return {"bench_all": summary}


if __name__ == "__main__":  # python -m invdiff.benchmarks.all merge DEST TARGET T1,T2,... PART [PART ...]
    import json
    import sys

    if len(sys.argv) < 6 or sys.argv[1] != "merge":
        sys.exit("usage: python -m invdiff.benchmarks.all merge DEST TARGET TABLE1,TABLE2,... PART [PART ...]")
    print(json.dumps(merge_parts(sys.argv[2], sys.argv[3], sys.argv[4].split(","), sys.argv[5:]), indent=1))
