"""Write benchmark rows as a Markdown table and a CSV file (atomically)."""
from __future__ import annotations

import csv
import os
import platform
from pathlib import Path

from invdiff.utils.io import atomic_path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(rows: list[dict]) -> str:
    """Rows (dicts with the same keys) as a Markdown table."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    for r in rows[1:]:
        cols += [c for c in r if c not in cols]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_table(rows: list[dict], out_dir: str | os.PathLike, name: str) -> str:
    """Write ``<out_dir>/<name>.md`` and ``<name>.csv``; return the Markdown text."""
    import torch

    from invdiff import __version__

    out = Path(out_dir)
    header = (
        f"# {name}\n\ninvdiff {__version__}, torch {torch.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}\n\n"
    )
    text = header + markdown(rows) + "\n"
    with atomic_path(out / f"{name}.md") as tmp:
        tmp.write_text(text)
    if rows:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        with atomic_path(out / f"{name}.csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    return text


def build_selected(builders: dict, env: str = "INVDIFF_BENCH_TABLES") -> dict[str, list[dict]]:
    """Call each builder of ``{table_name: () -> rows}`` and return ``{table_name: rows}``: all of them,
    or only those named in the environment variable ``INVDIFF_BENCH_TABLES`` (comma-separated), so one
    target's tables can run as separate processes (in parallel, or spread over sessions).

    >>> import os
    >>> os.environ["INVDIFF_BENCH_TABLES"] = "b"
    >>> build_selected({"a": lambda: [{"x": 1}], "b": lambda: [{"x": 2}]})
    {'b': [{'x': 2}]}
    >>> del os.environ["INVDIFF_BENCH_TABLES"]
    """
    wanted = [t.strip() for t in os.environ.get(env, ",".join(builders)).split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(builders))
    if unknown:
        raise ValueError(f"{env}: unknown table(s) {unknown}; expected names from {sorted(builders)}")
    return {name: builders[name]() for name in wanted}
