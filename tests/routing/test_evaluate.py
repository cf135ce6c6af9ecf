"""APGR / CPT(50%) and the eval-router command on RouteLLM-format CSVs."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.tools.eval_router import (
    apgr,
    configure_parser,
    length_baseline,
    random_baseline,
    read_csv,
    run,
)
from tests.conftest import ROOT

DATA = ROOT / ".." / "shared" / "data" / "routing"
GSM8K = DATA / "gsm8k_responses.csv"
needs_data = pytest.mark.skipif(
    not GSM8K.is_file(), reason="the shared routing data is not next to the repo"
)


def _synthetic(n: int = 400, seed: int = 3) -> tuple[list[bool], list[bool]]:
    rng = random.Random(seed)
    weak = [rng.random() < 0.6 for _ in range(n)]
    strong = [w or rng.random() < 0.8 for w in weak]
    return weak, strong


def test_oracle_beats_random_beats_reversed() -> None:
    weak, strong = _synthetic()
    oracle = [1.0 if s and not w else 0.0 for w, s in zip(weak, strong, strict=True)]
    a_oracle, cpt_oracle = apgr(oracle, weak, strong)
    a_rand, cpt_rand = random_baseline(weak, strong)
    a_worst, _ = apgr([-x for x in oracle], weak, strong)
    # Here the oracle recovers the gap in the first ~32% of calls: APGR = 1 - 0.32 / 2.
    assert a_oracle > 0.8 > 0.6 > a_rand > 0.4 > 0.2 > a_worst
    assert 0 < cpt_oracle < 0.2 < 0.35 < cpt_rand < 0.65


def test_tiny_case_by_hand() -> None:
    # Prompt 0 only the strong model gets right; prompt 1 both do. Sending prompt 0 first
    # recovers the whole gap at once: PGR goes 0 -> 1 -> 1, area (0.5 + 1) / 2 = 0.75;
    # half the gap needs half a call to prompt 0, i.e. a quarter of the calls.
    assert apgr([1.0, 0.0], [False, True], [True, True]) == (0.75, 0.25)
    # Sent last, it recovers nothing until the end: area 0.25, CPT 75%.
    assert apgr([0.0, 1.0], [False, True], [True, True]) == (0.25, 0.75)


def test_apgr_rejects_degenerate_data() -> None:
    with pytest.raises(ValueError):
        apgr([], [], [])
    with pytest.raises(ValueError):
        apgr([1.0], [True, False], [True, True])
    with pytest.raises(ValueError, match="not better"):
        apgr([1.0, 2.0], [True, True], [True, False])


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    configure_parser(p)
    return p.parse_args(argv)


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_run_prints_scorer_and_baselines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [f'"Q{i}: prove and then code {"x" * i}",{i % 3 != 0},True' for i in range(30)]
    f = _csv(tmp_path / "a.csv", "prompt,small,big", rows)
    g = _csv(tmp_path / "b.csv", "prompt,small,big", rows[:10])
    assert run(_args(str(f), str(g), "--weak", "small", "--strong", "big", "--per-file")) == 0
    out = capsys.readouterr().out
    for label in ("scorer", "random", "prompt-length"):
        assert out.count(f"{label}: APGR=") == 3, out  # two files and combined
    assert "== combined (40 prompts)" in out
    assert "CPT50=" in out and "%" in out
    # Without --per-file: one pooled figure per scorer.
    assert run(_args(str(f), str(g), "--weak", "small", "--strong", "big")) == 0
    out = capsys.readouterr().out
    assert out.startswith("== combined (40 prompts)\n") and out.count("scorer: APGR=") == 1


def test_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [f'"prompt {"word " * i}",{i % 2 == 0},True' for i in range(20)]
    f = _csv(tmp_path / "a.csv", "prompt,small,big", rows)
    assert run(_args(str(f), "--weak", "small", "--strong", "big", "--json")) == 0
    doc = json.loads(capsys.readouterr().out)
    res = doc[str(f)]
    assert res["prompts"] == 20
    assert set(res) == {"prompts", "scorer", "random", "prompt-length"}
    assert 0 <= res["scorer"]["cpt50"] <= 1


def test_run_errors_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _csv(tmp_path / "b.csv", "prompt,a", ['"x",True'])
    assert run(_args(str(f))) == 2
    err = capsys.readouterr().err
    assert "missing column" in err and "gpt-4-1106-preview" in err
    assert run(_args(str(tmp_path / "none.csv"))) == 2
    assert "none.csv" in capsys.readouterr().err
    bad = _csv(tmp_path / "c.csv", "prompt,w,s", ['"x",maybe,True'])
    assert run(_args(str(bad), "--weak", "w", "--strong", "s")) == 2
    assert "maybe" in capsys.readouterr().err


def test_read_csv_accepts_routellm_booleans(tmp_path: Path) -> None:
    f = _csv(tmp_path / "a.csv", "prompt,w,s,extra", ['"a, b",True,False,1', '"c",False,True,2'])
    assert read_csv(f, "w", "s") == (["a, b", "c"], [True, False], [False, True])


@needs_data
def test_reproduces_the_readme_baselines_on_gsm8k() -> None:
    prompts, weak, strong = read_csv(GSM8K)
    assert len(prompts) == 1319
    a_len, cpt_len = length_baseline(prompts, weak, strong)
    assert round(a_len, 3) == 0.601 and abs(cpt_len - 0.363) < 0.0015
    oracle = [1.0 if s and not w else 0.0 for w, s in zip(weak, strong, strict=True)]
    a_oracle, cpt_oracle = apgr(oracle, weak, strong)
    assert round(a_oracle, 3) == 1.016 and round(cpt_oracle, 3) == 0.109
    a_rand, _ = random_baseline(weak, strong)
    assert 0.47 < a_rand < 0.53


@needs_data
def test_cli_on_the_shared_gsm8k_file() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "eval-router", str(GSM8K)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "prompt-length: APGR=0.601 CPT50=36.3%" in out.stdout
    assert "scorer: APGR=0.6" in out.stdout
