"""`python -m gateway eval-cache`: precision and recall of the semantic cache on labelled pairs,
run for real (the encoder's ONNX graph made once per module in a temporary models folder)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.semantic.onnx_encoder import ensure_onnx
from gateway.tools.eval_cache import (
    DEFAULT,
    THRESHOLDS,
    QuestionPair,
    at_target,
    curve,
    read_pairs,
)
from tests.conftest import ROOT
from tests.pngmeta import png_text

SAME = [
    ("How do I reset the PLC on line 3?", "What is the reset procedure for the PLC on line 3?"),
    ("How can I learn Python quickly?", "What is the fastest way to learn Python?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How do I change a flat tyre?", "How can I change a flat tyre?"),
    ("Why is the sky blue?", "Why does the sky look blue?"),
    ("How do I turn on the pump?", "How can I turn on the pump?"),
    ("What is machine learning?", "What exactly is machine learning?"),
    ("How do I make pancakes?", "What is the best way to make pancakes?"),
    ("How do I stop snoring?", "How can I stop snoring?"),
    ("What causes earthquakes?", "What is the cause of earthquakes?"),
    ("How do I improve my English?", "How can I improve my English?"),
    ("What is the best laptop for programming?", "Which laptop is best for programming?"),
    ("How do I lose weight fast?", "How can I lose weight quickly?"),
    ("How do I calibrate the pressure sensor?", "How can I calibrate the pressure sensor?"),
    ("Why do cats purr?", "What makes cats purr?"),
    ("How does a heat pump work?", "How do heat pumps work?"),
    ("Is coffee bad for your health?", "Is drinking coffee bad for health?"),
    ("How do I become a data scientist?", "How can I become a data scientist?"),
    ("How do I clean the conveyor belt?", "What is the way to clean the conveyor belt?"),
    ("What is the meaning of life?", "What's the meaning of life?"),
    ("How do I start a small business?", "How can I start a small business?"),
    ("What are black holes?", "What is a black hole?"),
]
DIFFERENT = [
    ("How do I turn on the pump?", "How do I turn off the pump?"),
    ("How do I enable the alarm?", "How do I disable the alarm?"),
    ("What is the torque for M8 bolts?", "What is the torque for M10 bolts?"),
    ("How do I open the valve?", "How do I close the valve?"),
    ("How do I increase the conveyor speed?", "How do I decrease the conveyor speed?"),
    ("Can I run the motor at 50 Hz?", "Can I run the motor at 60 Hz?"),
    ("Is the machine safe to use?", "Is the machine not safe to use?"),
    ("How do I install Python?", "How do I uninstall Python?"),
    ("What is the best phone in 2019?", "What is the best phone in 2021?"),
    ("How do I upload files to the server?", "How do I download files from the server?"),
    ("What is the capital of France?", "What is the capital of Germany?"),
    ("How do I learn guitar?", "How do I learn piano?"),
    ("Why is the sky blue?", "Why is the ocean salty?"),
    ("How do I make pancakes?", "How do I make waffles?"),
    ("What causes earthquakes?", "What causes volcanoes?"),
    ("How do I start the engine?", "How do I stop the engine?"),
    ("What is the minimum pressure?", "What is the maximum pressure?"),
    ("How do I lock the door?", "How do I unlock the door?"),
]
OPPOSITES = [p for p in DIFFERENT if p[0].split()[:3] == p[1].split()[:3]][:6]
ROW = re.compile(r"^\s+(0\.\d\d)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    ensure_onnx(folder)  # about a second; the runs below reuse it
    return folder


def write_pairs(path: Path, same: list[tuple[str, str]], different: list[tuple[str, str]]) -> Path:
    lines = [json.dumps({"a": a, "b": b, "same": True}) for a, b in same]
    lines += [json.dumps({"a": a, "b": b, "same": False}) for a, b in different]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def eval_cache(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway", "eval-cache", *map(str, argv)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def table(out: str) -> dict[float, list[str]]:
    return {
        float(m[1]): list(m.groups()[1:]) for line in out.splitlines() if (m := ROW.match(line))
    }


def test_prints_the_table_and_the_summary_and_plots(tmp_path: Path, models_dir: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", SAME, DIFFERENT)
    png = tmp_path / "cache.png"
    r = eval_cache(pairs, "--models-dir", models_dir, "--plot", png, "--target-precision", "0.9")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"{len(SAME) + len(DIFFERENT)} pairs, {len(SAME)} labelled same" in out
    rows = table(out)
    assert sorted(rows) == THRESHOLDS
    for p, rec, n, vp, vrec, vn in rows.values():
        for prec, recall, count in ((p, rec, n), (vp, vrec, vn)):
            assert 0.0 <= float(recall) <= 1.0
            assert prec == "-" if count == "0" else 0.0 <= float(prec) <= 1.0
        # The verifier only removes pairs the cosine accepted.
        assert int(vn) <= int(n) and float(vrec) <= float(rec)
    for col in (2, 5):
        counts = [int(rows[t][col]) for t in THRESHOLDS]
        assert counts == sorted(counts, reverse=True) and counts[0] > 0
    # The verifier turns the opposites away: at 0.80 it is more precise than cosine alone.
    assert float(rows[0.8][3]) > float(rows[0.8][0])
    assert "target precision 0.9:" in out
    for name in ("cosine alone", "cosine + verifier"):
        line = next(
            x
            for x in out.splitlines()
            if x.startswith(f"  {name}: threshold") or (x.startswith(f"  {name}: none of"))
        )
        # The summary agrees with the table: the lowest threshold reaching 0.9, if any.
        col = 0 if name == "cosine alone" else 3
        hits = [t for t in THRESHOLDS if rows[t][col] not in ("-", "n/a")]
        reach = [t for t in hits if float(rows[t][col]) >= 0.9]
        if reach:
            assert line.startswith(f"  {name}: threshold {reach[0]:.2f}")
        else:
            assert "none of" in line
    assert f"shipped default threshold {DEFAULT:g} (policy semantic_cache.threshold)" in out
    if DEFAULT in rows:
        want = rows[DEFAULT]
        assert f"  cosine alone: precision {want[0]}, recall {want[1]}, {want[2]} accepted" in out
        assert f"  cosine + verifier: precision {want[3]}, recall {want[4]}, {want[5]} acc" in out
    meta = png_text(png)
    series = json.loads(meta["Series"])
    assert series == [
        "precision (cosine alone)",
        "precision (cosine + verifier)",
        "recall (cosine alone)",
        "recall (cosine + verifier)",
    ]
    assert json.loads(meta["Dashed"]) == ["precision (cosine alone)", "recall (cosine alone)"]
    assert json.loads(meta["Threshold"])["threshold"] == DEFAULT
    assert f"wrote {png}" in out


def test_opposites_pass_cosine_and_not_the_verifier(tmp_path: Path, models_dir: Path) -> None:
    pairs = write_pairs(tmp_path / "opposites.jsonl", SAME[:1], OPPOSITES)
    r = eval_cache(pairs, "--models-dir", models_dir)
    assert r.returncode == 0, r.stderr
    rows = table(r.stdout)
    # "turn on"/"turn off" and the like embed alike: cosine alone serves the wrong answer...
    assert int(rows[0.80][2]) > 1 and float(rows[0.80][0]) < 0.5
    # ...the verifier accepts at most the one paraphrase, whatever the threshold.
    assert all(int(rows[t][5]) <= 1 for t in THRESHOLDS)


def test_limit_reads_the_first_pairs(tmp_path: Path, models_dir: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", SAME, DIFFERENT)
    r = eval_cache(pairs, "--models-dir", models_dir, "--limit", "5")
    assert r.returncode == 0, r.stderr
    assert "5 pairs, 5 labelled same" in r.stdout


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            '{"a": "x", "b": "y", "same": true}\n{"a": "x", "b": "y", "same": tru\n',
            ":2: invalid JSON",
        ),
        ('{"a": "x", "b": "y", "same": true}\n\n{"a": "x", "b": "y"}\n', ':3: "same" must be'),
        ('{"a": "", "b": "y", "same": false}\n', ':1: "a" and "b" must be non-empty'),
        ("[1, 2]\n", ":1: expected an object"),
        ("\n\n", "no labelled pairs"),
    ],
)
def test_bad_input_exits_2_naming_the_line(
    tmp_path: Path, models_dir: Path, content: str, says: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    r = eval_cache(path, "--models-dir", models_dir)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"eval-cache: {path}")


def test_missing_file_exits_2(tmp_path: Path, models_dir: Path) -> None:
    r = eval_cache(tmp_path / "nope.jsonl", "--models-dir", models_dir)
    assert r.returncode == 2 and "nope.jsonl" in r.stderr and "Traceback" not in r.stderr


def test_curve_and_target_by_hand() -> None:
    same = [True, True, False, True]
    cos = [0.95, 0.85, 0.93, 0.5]
    rows = {r.threshold: r for r in curve(same, cos)}
    assert (rows[0.85].accepted, rows[0.85].precision, rows[0.85].recall) == (3, 2 / 3, 2 / 3)
    assert (rows[0.94].accepted, rows[0.94].precision) == (1, 1.0)
    assert rows[0.99].precision is None and rows[0.99].recall == 0.0
    asked: list[tuple[int, float]] = []

    def accept(i: int, t: float) -> bool:
        asked.append((i, t))
        return i != 2  # the verifier turns the pair labelled different away

    verified = {r.threshold: r for r in curve(same, cos, accept)}
    assert (verified[0.85].accepted, verified[0.85].precision) == (2, 1.0)
    assert (0, 0.95) in asked and (2, 0.85) in asked and (3, 0.8) not in asked
    assert curve(same, cos, accept, [0.925])[0].accepted == 1  # off the grid too
    assert at_target(list(rows.values()), 0.9) == rows[0.94]
    assert at_target(list(rows.values()), 1.01) is None


def test_read_pairs_limit(tmp_path: Path) -> None:
    path = write_pairs(tmp_path / "p.jsonl", SAME[:3], DIFFERENT[:3])
    assert read_pairs(path, 2) == [QuestionPair(a, b, True) for a, b in SAME[:2]]
    assert len(read_pairs(path)) == 6
