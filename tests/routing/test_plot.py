"""The routing curve (curves.py), `eval-router --plot`, and the curve of the box's own labels."""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.durable import Record
from gateway.learning.curve import routing_curve
from gateway.routing.complexity import ComplexityScorer
from gateway.routing.curves import gap_curve, random_curve, recovered_at, share_at
from gateway.routing.learned import vector
from gateway.tools import eval_router as evaluate
from gateway.tools import train_router as train
from gateway.tools.eval_router import apgr
from gateway.tools.plot import PlotError, plot_curves
from tests.conftest import ROOT
from tests.pngmeta import png_text
from tests.routing.test_train import synthetic_rows, write_csv


def _eval(*argv: str) -> int:
    p = argparse.ArgumentParser()
    evaluate.configure_parser(p)
    return evaluate.run(p.parse_args(list(argv)))


def test_gap_curve_by_hand_and_its_area_is_apgr() -> None:
    # Prompt 0 only the strong model gets right: sent first, the whole gap is recovered at 50%.
    assert gap_curve([1.0, 0.0], [1.0, 0.0], points=3) == [(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)]
    assert gap_curve([0.0, 1.0], [1.0, 0.0], points=3) == [(0.0, 0.0), (0.5, 0.0), (1.0, 1.0)]
    assert gap_curve([1.0, 2.0], [0.0, 0.0]) == []  # nothing to recover: no curve
    rows = synthetic_rows(300, seed=5)
    scores = [float(len(p)) for p, _, _ in rows]
    gains = [float(int(s) - int(w)) for _, w, s in rows]
    curve = gap_curve(scores, gains, points=301)
    area = sum((y0 + y1) / 2 * (x1 - x0) for (x0, y0), (x1, y1) in itertools.pairwise(curve))
    exact = apgr(scores, [w for _, w, _ in rows], [s for *_, s in rows])[0]
    assert area == pytest.approx(exact, abs=1e-4)  # points are rounded to 4 decimals
    assert random_curve(3) == [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]
    assert share_at([0.1, 0.6, 0.9, 0.55], 0.55) == 0.75
    assert recovered_at([(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)], 0.25) == 0.5


def test_eval_router_plot_writes_a_png_naming_its_series(tmp_path: Path) -> None:
    rows = synthetic_rows(400, seed=2)
    data = write_csv(tmp_path / "data.csv", rows)
    weights = tmp_path / "w.json"
    p = argparse.ArgumentParser()
    train.configure_parser(p)
    args = ["--weak", "small", "--strong", "big"]
    assert train.run(p.parse_args([str(data), *args, "--l2", "1", "--out", str(weights)])) == 0
    png = tmp_path / "curve.png"
    assert _eval(str(data), *args, "--weights", str(weights), "--plot", str(png)) == 0
    meta = png_text(png)
    assert json.loads(meta["Series"]) == ["scorer", "weights", "prompt-length", "random"]
    marker = json.loads(meta["Threshold"])
    # The default policy's `complexity >= 0.55`, marked on the curve of the scorer in use.
    assert marker["series"] == "weights" and "complexity >= 0.55" in marker["label"]
    assert 0.0 <= marker["share"] <= 1.0
    # Without --weights: the shipped scorer's curve carries the marker.
    assert _eval(str(data), *args, "--plot", str(png)) == 0
    meta = png_text(png)
    assert json.loads(meta["Series"]) == ["scorer", "prompt-length", "random"]
    assert json.loads(meta["Threshold"])["series"] == "scorer"
    # A policy without a complexity rule: the curves, no marker.
    plain = tmp_path / "plain.yaml"
    plain.write_text("version: 1\ndefault: local\n")
    assert _eval(str(data), *args, "--plot", str(png), "--policy", str(plain)) == 0
    assert "Threshold" not in png_text(png)


def test_plot_without_matplotlib_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotError, match=r"\[plots\]"):
        plot_curves(tmp_path / "x.png", {"random": random_curve()}, title="t")
    rows = synthetic_rows(60, seed=3)
    data = write_csv(tmp_path / "d.csv", rows)
    assert _eval(str(data), "--weak", "small", "--strong", "big", "--plot", "x.png") == 2


def test_the_gateway_never_imports_matplotlib() -> None:
    code = (
        "import sys, gateway.__main__, gateway.http.server, gateway.tools.eval_router, "
        "gateway.tools.calibrate, gateway.learning.curve; print('matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _rows(n: int) -> list[Record]:
    rows = synthetic_rows(n, seed=4)
    # The label the store keeps: 1 = the cloud should have answered (the weak model failed).
    return [
        Record(i + 1, 0.0, "shadow", {"v": vector(p), "label": 0.0 if w else 1.0, "route": "local"})
        for i, (p, w, _) in enumerate(rows)
    ]


def test_routing_curve_of_the_stored_labels() -> None:
    shipped = ComplexityScorer()
    few = routing_curve(_rows(20), shipped, threshold=0.55, min_labels=50)
    assert few["ready"] is False and few["labels"] == 20 and "20 of the 50" in few["reason"]
    rows = _rows(200)
    got = routing_curve(rows, shipped, threshold=0.55, min_labels=50)
    assert got["ready"] is True and got["labels"] == 200
    assert set(got["series"]) == {"policy scorer", "prompt-length", "random"}
    assert got["series"]["random"][0] == [0.0, 0.0] and got["series"]["random"][-1] == [1.0, 1.0]
    # The shipped scorer is prompt length: the same curve.
    assert got["series"]["policy scorer"] == got["series"]["prompt-length"]
    t = got["threshold"]
    scores = [shipped.score(p).score for p, _, _ in synthetic_rows(200, seed=4)]
    assert t["complexity"] == 0.55 and t["share"] == pytest.approx(share_at(scores, 0.55))
    assert routing_curve(rows, shipped, threshold=None, min_labels=50)["threshold"] is None
    # Rows of an older feature version are not counted (their terms mean other words).
    old = [Record(r.id, r.at, r.kind, {**r.body, "v": {**r.body["v"], "fv": 1}}) for r in rows]
    assert routing_curve(old, shipped, threshold=0.55, min_labels=50)["labels"] == 0


def test_curve_min_labels_is_a_setting_with_a_floor() -> None:
    from gateway.settings import SettingsError, load_settings

    assert load_settings().learning.curve_min_labels == 100
    assert load_settings(learning={"curve_min_labels": 5}).learning.curve_min_labels == 5
    with pytest.raises(SettingsError, match="curve_min_labels"):
        load_settings(learning={"curve_min_labels": 1})
