"""The evaluation report and model card: self-contained HTML with every section."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from detector.cli.main import app
from tests.unit.conftest import mixture_sample

SECTIONS = (
    "Summary",
    "ROC and PR curves",
    "Score distributions",
    "Calibration and recall",
    "Features that drive alerts",
    "Model card",
)


def test_evaluate_report_and_model_card_have_every_section(tmp_path: Path) -> None:
    # Given a trained model and a labelled test file
    x = mixture_sample(3000, seed=50)
    test = np.vstack(
        [
            mixture_sample(1000, seed=51),
            mixture_sample(50, seed=52) + np.array([12.0, -12.0, 0.0, 0.0]),
        ]
    )
    labels = [0] * 1000 + [1] * 50
    for name, data, lab in (("train.csv", x, [0] * len(x)), ("test.csv", test, labels)):
        with (tmp_path / name).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["a", "b", "c", "d", "label"])
            w.writerows([[*r, y] for r, y in zip(data.tolist(), lab, strict=True)])
    env = {"DETECTOR_MODEL__N_COMPONENTS_MAX": "4", "DETECTOR_TRAINING__N_JOBS": "1"}
    models = tmp_path / "m"
    assert (
        CliRunner()
        .invoke(
            app,
            ["train", str(tmp_path / "train.csv"), "-m", str(models), "-l", "label", "-q"],
            env=env,
        )
        .exit_code
        == 0
    )
    # When the evaluation report and the model card are written
    report, card = tmp_path / "report.html", tmp_path / "card.html"
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "test.csv"),
            "-m",
            str(models),
            "-l",
            "label",
            "--report",
            str(report),
        ],
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["models", "show", "-m", str(models), "--report", str(card)])
    assert r.exit_code == 0, r.output
    # Then the report is one offline page with each section and its plots embedded
    html = report.read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in html, section
    assert html.count("data:image/png;base64,") >= 5
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from the network
    assert "BIC heat map" in card.read_text() and "Thresholds" in card.read_text()


def test_table_cells_from_data_are_escaped_and_only_typed_markup_is_kept() -> None:
    # Given a cell from the data that looks like HTML, and markup this module writes on purpose
    from detector.report.html import Html, table

    hostile = "<img src=x onerror=alert(1)>"
    # When they are rendered in one table
    out = table(["value", "result"], [[hostile, Html("<span class='ok'>caught</span>")]])
    # Then the data is text on the page and the typed markup is markup
    assert hostile not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    assert "<td><span class='ok'>caught</span></td>" in out


def test_model_card_escapes_a_category_value_from_the_data(tmp_path: Path) -> None:
    # Given a model trained on rows whose categorical column holds a script tag
    from detector.model.train import train
    from detector.report.html import model_card_report
    from tests.unit.conftest import as_rows, small_settings

    hostile = "<script>alert('x')</script>"
    x = mixture_sample(1500, seed=53)
    kinds = [hostile if i % 3 == 0 else "pump" for i in range(len(x))]
    rows = [dict(r, kind=k) for r, k in zip(as_rows(x), kinds, strict=True)]
    bundle = train(rows, small_settings(model={"n_components_max": 2}))
    # When its model card is written
    card = tmp_path / "card.html"
    model_card_report(card, bundle)
    # Then the category is shown, escaped, and no script tag reaches the page
    text = card.read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
