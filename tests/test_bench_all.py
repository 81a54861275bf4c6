"""`invdiff bench all`: every target run, failures reported, one report (from fake rows: the
real targets are benchmarks, not tests)."""
from __future__ import annotations

import pytest

from invdiff.benchmarks.all import finished, load_results, normalise, run, run_targets
from invdiff.benchmarks.report import figures, headline, write_report

SAMPLERS = [dict(task=t, method=m, nfe_total=n, psnr=p, seconds=s)
            for t, rows in {"ct": [("DPS", 10, 20.0, 1.0), ("DPS", 100, 25.0, 9.0), ("RED-Diff", 100, 24.0, 4.0),
                                   ("deepinv DPS", 10, 19.0, 2.0), ("deepinv DPS", 100, 23.0, 20.0),
                                   ("deepinv DiffPIR", 10, 24.5, 1.5)]}.items()
            for m, n, p, s in rows]


def fake_runner(target, out, quick, device):
    assert quick
    if target == "broken":
        raise RuntimeError("target exploded")
    if target == "operators":
        return [{"operator": "mri-4x", "x_shape": "2x64x64", "A ms": 0.2, "ratio A": 1.1, "ratio A^T": 1.0, "ratio A^TA": 1.3}]
    if target == "channel":
        return [dict(snr_db=10, estimator="LS", nmse_db=-5.0, nfe=0), dict(snr_db=10, estimator="PnP-ODE", nmse_db=-12.0, nfe=20)]
    return {"samplers": SAMPLERS, "calibration": [dict(task="ct", sampler="smc", coverage_90=0.86)]}


def test_normalise():
    assert normalise("x", [{"a": 1}]) == {"x": [{"a": 1}]}
    assert normalise("x", {}) == {}
    with pytest.raises(TypeError, match="expected rows"):
        normalise("x", 3)


def test_headline_best_method_and_deepinv_at_the_same_nfe():
    h = headline({"priors": {"samplers": SAMPLERS}})
    assert len(h) == 1
    row = h[0]
    assert (row["task"], row["best invdiff"], row["value"], row["NFE"], row["time"]) == ("ct", "DPS", 25.0, 100, "9 seconds")
    # deepinv's best at the same NFE (100): its DPS, not DiffPIR at NFE 10
    assert (row["deepinv nearest"], row["deepinv value"], row["deepinv NFE"]) == ("deepinv DPS", 23.0, 100)


def test_headline_skips_reference_rows():
    rows = SAMPLERS + [dict(task="ct", method="exact posterior mean", nfe_total=0, psnr=40.0, seconds=0.0),
                       dict(task="ct", method="quantised truth (16 levels)", nfe_total=0, psnr=37.3, seconds=0.0)]
    assert headline({"p": {"s": rows}})[0]["best invdiff"] == "DPS"


def test_headline_skips_a_task_where_every_method_ties():
    rows = [dict(task="inpainting", sampler=s, nfe=32, tv=1.0, seconds=1.0) for s in ("aps", "svdd", "masked-unguided")]
    rows.append(dict(task="sr2", sampler="aps", nfe=32, tv=0.99, seconds=1.0))
    rows.append(dict(task="sr2", sampler="svdd", nfe=32, tv=1.0, seconds=1.0))
    h = headline({"aps": {"aps_oracle": rows}})
    assert [(r["task"], r["best invdiff"]) for r in h] == [("sr2", "aps")]


def test_headline_lower_is_better_and_rows_without_deepinv():
    rows = fake_runner("channel", None, True, "cpu") + [dict(snr_db=-5, estimator="LS", nmse_db=3.0, nfe=0)]
    h = headline({"channel": {"channel": rows}})
    assert len(h) == 1  # -5 dB is not a headline SNR
    assert h[0]["best invdiff"] == "PnP-ODE" and h[0]["value"] == -12.0
    assert h[0]["task"] == "channel estimation, SNR 10 dB"
    assert "no deepinv" in h[0]["deepinv nearest"]


def test_run_targets_reports_a_failure_and_keeps_going(tmp_path):
    seen = []
    res = run_targets(["priors", "broken", "operators", "channel"], tmp_path, True, "cpu", runner=fake_runner,
                      on_result=lambda rs: seen.append(len(rs)))
    assert [r["status"] for r in res] == ["ok", "failed", "ok", "ok"]
    assert seen == [1, 2, 3, 4]  # the report can be rewritten after every target
    partial = write_report(res[:2], tmp_path / "partial", quick=True, planned=4).read_text()
    assert "incomplete: 2 of 4 targets" in partial
    back = load_results(tmp_path, ["priors", "missing", "channel"])
    assert [r["target"] for r in back] == ["priors", "channel"]
    assert back[0]["tables"]["samplers"][1] == SAMPLERS[1]  # numbers parsed back from the CSV
    assert "target exploded" in res[1]["error"] and "RuntimeError" in res[1]["traceback"]
    assert (tmp_path / "priors" / "samplers.csv").exists() and (tmp_path / "operators" / "operators.md").exists()
    path = write_report(res, tmp_path, quick=True, total_seconds=1.0)
    text = path.read_text()
    for needle in ("# invdiff benchmark report", "quick run", "git commit", "CPU", "torch threads", "deepinv",
                   "## Headline", "| ct | priors/samplers |", "**Failed**: `RuntimeError: target exploded`",
                   "figures/priors-samplers-nfe.png", "figures/operators-operators-floor.png",
                   "figures/priors-calibration-coverage.png"):
        assert needle in text, needle
    for png in ("priors-samplers-nfe.png", "priors-samplers-time.png", "operators-operators-floor.png"):
        assert (tmp_path / "figures" / png).stat().st_size > 1000


def test_figures_skip_tables_without_the_columns(tmp_path):
    assert figures("t", "n", [{"a": 1, "b": "x"}], tmp_path) == []
    assert figures("t", "n", [dict(task="ct", method="DPS", nfe=10, psnr=20.0)], tmp_path) == []  # one point: no curve


def test_unknown_target_in_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INVDIFF_BENCH_ALL_TARGETS", "solvers,nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        run(str(tmp_path), True, "cpu")


def test_cli_knows_all():
    from invdiff.cli.bench import TARGETS

    assert "all" in TARGETS


def test_resume_reads_back_finished_targets_and_records_when_and_where(tmp_path):
    from invdiff.benchmarks import all as bench_all

    calls = []

    def runner(target, out, quick, device):
        calls.append(target)
        return None if target == "gpu" else fake_runner(target, out, quick, device)  # gpu skips itself (no table)

    first = run_targets(["priors", "broken"], tmp_path, True, "cpu", runner=runner)
    assert [r["status"] for r in first] == ["ok", "failed"]
    record = (tmp_path / "priors" / "run.json").read_text()
    assert '"quick": true' in record and '"status": "ok"' in record and '"commit"' in record and '"started"' in record
    assert bench_all.finished(tmp_path, "priors", quick=True)
    assert not bench_all.finished(tmp_path, "priors", quick=False)  # a quick table never stands in for a full one
    assert not bench_all.finished(tmp_path, "broken", quick=True)  # a failed target is rerun
    calls.clear()
    orig = bench_all.run_targets
    bench_all.run_targets = lambda targets, out, quick, device, on_result=None: orig(targets, out, quick, device, runner, on_result)
    try:
        bench_all.run(str(tmp_path), True, "cpu", targets=["priors", "broken", "channel", "gpu"], resume=True)
    finally:
        bench_all.run_targets = orig
    assert calls == ["broken", "channel", "gpu"]  # priors read back, not rerun
    text = (tmp_path / "report.md").read_text()
    assert "1 of them (priors) were read back" in text and "ok (read back)" in text
    assert text.index("## priors") < text.index("## broken") < text.index("## channel")  # the targets' order is kept
    calls.clear()
    (tmp_path / "report.md").unlink()
    bench_all.run(str(tmp_path), True, "cpu", targets=["priors", "broken", "channel", "operators", "gpu"], report_only=True)
    assert calls == []  # nothing runs
    text = (tmp_path / "report.md").read_text()
    assert "incomplete: 3 of 5 targets" in text and "## broken" not in text and "## operators" not in text
    assert "skipped (no table) (read back)" in text  # a target that skipped itself is reported as such


def test_bench_resume_is_refused_for_a_single_target(capsys):
    from invdiff.cli import main

    assert main(["bench", "operators", "--resume"]) == 2
    assert "--resume applies to `invdiff bench all` only" in capsys.readouterr().err


def test_build_selected_runs_only_the_named_tables(monkeypatch):
    import doctest

    from invdiff.benchmarks import table
    from invdiff.benchmarks.table import build_selected

    calls = []
    builders = {name: (lambda name=name: calls.append(name) or [{"t": name}]) for name in ("a", "b", "c")}
    monkeypatch.setenv("INVDIFF_BENCH_TABLES", "c, a")
    assert build_selected(builders) == {"c": [{"t": "c"}], "a": [{"t": "a"}]} and calls == ["c", "a"]
    monkeypatch.setenv("INVDIFF_BENCH_TABLES", "a,typo")
    with pytest.raises(ValueError, match=r"unknown table\(s\) \['typo'\]"):
        build_selected(builders)
    monkeypatch.delenv("INVDIFF_BENCH_TABLES")
    assert list(build_selected(builders)) == ["a", "b", "c"]
    assert doctest.testmod(table).failed == 0


def test_merge_parts_records_each_table_and_says_partial_until_all_are_there(tmp_path):
    import json

    from invdiff.benchmarks.all import merge_parts

    def part(name, table, commit, seconds, quick=False, status="ok"):
        folder = tmp_path / name / "samplers"
        folder.mkdir(parents=True)
        (folder / f"{table}.csv").write_text("a,b\n1,2\n")
        (folder / f"{table}.md").write_text("| a |\n")
        (folder / "run.json").write_text(json.dumps(dict(target="samplers", status=status, seconds=seconds,
                                                         started="2026-12-08 00:00", commit=commit, quick=quick,
                                                         device="cpu")))
        return tmp_path / name

    p1, p2 = part("p1", "fast", "aaaaaaaaaaaaaaaa", 10.0), part("p2", "gmm", "bbbbbbbbbbbbbbbb", 5.5)
    rec = merge_parts(tmp_path / "dest", "samplers", ["fast", "gmm", "deepinv"], [p1, p2])
    assert rec["status"] == "partial (missing: deepinv)" and rec["seconds"] == 15.5
    assert rec["tables"]["gmm"]["commit"] == "bbbbbbbbbbbbbbbb" and rec["commit"] == "aaaaaaaaaaaa, bbbbbbbbbbbb"
    assert sorted(f.name for f in (tmp_path / "dest" / "samplers").iterdir()) == [
        "fast.csv", "fast.md", "gmm.csv", "gmm.md", "run.json"]
    assert not finished(tmp_path / "dest", "samplers", quick=False)  # partial: --resume reruns it
    assert finished(tmp_path / "dest", "samplers", quick=False, partial=True)  # --report-only shows it
    run(str(tmp_path / "dest"), False, "cpu", targets=["samplers"], report_only=True)
    assert "**Partial** (some tables missing, see the targets table): samplers." in (tmp_path / "dest" / "report.md").read_text()
    p3 = part("p3", "deepinv", "cccccccccccccccc", 1.0)
    assert merge_parts(tmp_path / "dest", "samplers", ["fast", "gmm", "deepinv"], [p1, p2, p3])["status"] == "ok"
    assert finished(tmp_path / "dest", "samplers", quick=False)
    with pytest.raises(ValueError, match="one mode"):
        merge_parts(tmp_path / "d2", "samplers", ["fast"], [p1, part("q", "fast", "c", 1.0, quick=True)])
    with pytest.raises(ValueError, match="status ok"):
        merge_parts(tmp_path / "d3", "samplers", ["fast"], [part("f", "fast", "c", 1.0, status="failed")])
    assert finished(tmp_path / "d4", "x", quick=False) is False  # no run.json
