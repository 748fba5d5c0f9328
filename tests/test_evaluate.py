"""Measuring a router on labelled data: reading the rows, every metric by hand, and
``semroute eval`` end to end on a FakeEncoder index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from semroute import Router
from semroute.cli.main import main
from semroute.errors import DataError
from semroute.tuning.evaluate import Labelled, evaluate, load_labelled, metrics


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path


# --- reading labelled data --------------------------------------------------------------------


def test_load_labelled_reads_rows_and_skips_blank_lines(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(
        '{"text": "will it rain", "label": "weather"}\n\n   \n'
        '{"text": "héllo ☀", "label": "greeting", "id": 7}\n'
    )
    data = load_labelled(f)
    assert data.texts == ["will it rain", "héllo ☀"]
    assert data.labels == ["weather", "greeting"]
    assert data.source == str(f)


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        pytest.param(
            b'{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n',
            3,
            "not valid JSON",
            id="bad-json-line-3",
        ),
        pytest.param(b'{"label": "x"}\n', 1, '"text"', id="missing-text"),
        pytest.param(b'{"text": 5, "label": "x"}\n', 1, '"text"', id="text-not-string"),
        pytest.param(b'["text", "label"]\n', 1, '"text"', id="row-not-object"),
        pytest.param(
            b'{"text": "a", "label": "x"}\n{"text": "b", "label": 3}\n',
            2,
            '"label"',
            id="label-not-string",
        ),
        pytest.param(b'{"text": "a"}\n', 1, '"label"', id="missing-label"),
        pytest.param(b'{"text": "a", "label": ""}\n', 1, '"label"', id="empty-label"),
        pytest.param(b"", None, "no rows", id="empty-file"),
        pytest.param(b"\n  \n", None, "no rows", id="only-blank-lines"),
        pytest.param(b'{"text": "caf\xe9", "label": "x"}\n', None, "UTF-8", id="not-utf8"),
    ],
)
def test_bad_labelled_data_names_the_file_and_line(
    tmp_path: Path, content: bytes, line: int | None, message: str
) -> None:
    f = tmp_path / "data.jsonl"
    f.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_labelled(f)
    err = info.value
    assert err.file == str(f)
    assert err.line == line
    where = f"{f}:{line}: " if line else f"{f}: "
    assert str(err).startswith(where)
    assert message in str(err)
    assert "\n" not in str(err)


def test_missing_data_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read it"):
        load_labelled(tmp_path / "nope.jsonl")


def test_truth_maps_labels_to_route_indices_and_oos_to_minus_one() -> None:
    data = Labelled(["a", "b", "c", "d"], ["billing", "oos", "weather", "billing"], "d.jsonl")
    assert data.truth(["weather", "billing"]).tolist() == [1, -1, 0, 1]
    # Another out-of-scope label: "oos" is then an unknown label.
    other = Labelled(["a", "b"], ["billing", "none"], "d.jsonl")
    assert other.truth(["billing"], oos_label="none").tolist() == [0, -1]


def test_truth_refuses_an_out_of_scope_label_that_names_a_route() -> None:
    data = Labelled(["a", "b"], ["billing", "weather"], "val.jsonl")
    with pytest.raises(DataError, match="label 'billing' is also the name of a route"):
        data.truth(["weather", "billing"], oos_label="billing")
    assert data.truth(["weather", "billing"], oos_label="none").tolist() == [1, 0]


def test_truth_refuses_labels_that_name_no_route_and_counts_them() -> None:
    data = Labelled(
        ["a", "b", "c", "d", "e"], ["weathr", "billing", "weathr", "nope", "oos"], "val.jsonl"
    )
    with pytest.raises(DataError) as info:
        data.truth(["weather", "billing"])
    message = str(info.value)
    assert message.startswith("val.jsonl: ")
    assert "'weathr' (2 rows)" in message
    assert "'nope' (1 row)" in message and "2 labels name no route of the index" in message
    assert "rebuild the index with those routes" in message
    assert "billing" not in message.split("name no route")[1].split(";")[0]
    assert "--oos-label" in message


# --- metrics on a hand-built confidence matrix ------------------------------------------------

ROUTES = ["a", "b"]
THRESHOLDS = np.array([0.5, 0.5], dtype=np.float32)
# confidence (a, b), truth; what the thresholds do with each row is noted.
HAND = [
    ([0.9, 0.1], 0),  # → a: right
    ([0.8, 0.2], 0),  # → a: right
    ([0.3, 0.2], 0),  # → default: in-scope sent to default is wrong (closed-set right)
    ([0.2, 0.7], 0),  # → b: confused a→b (closed-set wrong too)
    ([0.1, 0.9], 1),  # → b: right
    ([0.4, 0.1], -1),  # → default: out-of-scope caught
    ([0.6, 0.3], -1),  # → a: out-of-scope misrouted
    ([0.2, 0.45], -1),  # → default: out-of-scope caught
]
CONF = np.array([c for c, _ in HAND], dtype=np.float32)
TRUTH = np.array([t for _, t in HAND], dtype=np.int64)


def test_metrics_computed_by_hand() -> None:
    r = metrics(CONF, TRUTH, THRESHOLDS, 0.0, ROUTES)
    assert (r.n, r.n_oos) == (8, 3)
    assert r.accuracy == pytest.approx(5 / 8)  # rows 1, 2, 5, 6, 8
    assert r.in_scope_accuracy == pytest.approx(3 / 5)
    assert r.closed_set_accuracy == pytest.approx(4 / 5)
    assert r.oos_precision == pytest.approx(2 / 3)  # rows 3, 6, 8 went to default; 6, 8 are oos
    assert r.oos_recall == pytest.approx(2 / 3)
    assert r.oos_f1 == pytest.approx(2 / 3)
    assert r.coverage == pytest.approx(5 / 8)
    a, b = r.per_route["a"], r.per_route["b"]
    assert (a.precision, a.recall, a.support) == (pytest.approx(2 / 3), pytest.approx(1 / 2), 4)
    assert a.f1 == pytest.approx(4 / 7)
    assert (b.precision, b.recall, b.support) == (pytest.approx(1 / 2), pytest.approx(1.0), 1)
    assert b.f1 == pytest.approx(2 / 3)
    assert r.confused_pairs == [("a", "b", 1)]
    # Pairs (in-scope, oos) where the in-scope row is more confident: 3+3+0+3+3 of 15.
    assert r.auroc == pytest.approx(12 / 15)


def test_metrics_respect_per_route_thresholds_and_min_margin() -> None:
    # Route b needs 0.95: rows 4 and 5 now fall back; min_margin 0.65 also stops row 2 (0.6).
    r = metrics(CONF, TRUTH, np.array([0.5, 0.95], np.float32), 0.65, ROUTES)
    assert r.in_scope_accuracy == pytest.approx(1 / 5)  # only row 1 (margin 0.8) is routed right
    assert r.per_route["b"].precision is None  # nothing was sent to b
    assert r.per_route["b"].recall == 0.0
    assert r.per_route["b"].f1 is None
    assert r.confused_pairs == []
    # Thresholds do not touch closed-set accuracy or AUROC.
    assert r.closed_set_accuracy == pytest.approx(4 / 5)
    assert r.auroc == pytest.approx(12 / 15)


def test_metrics_without_out_of_scope_rows_leave_oos_numbers_undefined() -> None:
    ins = TRUTH >= 0
    r = metrics(CONF[ins], TRUTH[ins], THRESHOLDS, 0.0, ROUTES)
    assert (r.n, r.n_oos) == (5, 0)
    assert r.oos_recall is None
    assert r.auroc is None
    assert r.oos_f1 is None
    assert r.oos_precision == 0.0  # one in-scope row went to default: none of those were oos
    assert r.accuracy == r.in_scope_accuracy == pytest.approx(3 / 5)


def test_metrics_with_only_out_of_scope_rows() -> None:
    oos = TRUTH < 0
    r = metrics(CONF[oos], TRUTH[oos], THRESHOLDS, 0.0, ROUTES)
    assert r.in_scope_accuracy is None and r.closed_set_accuracy is None and r.auroc is None
    assert r.oos_recall == pytest.approx(2 / 3)
    assert r.per_route["a"].support == 0 and r.per_route["a"].recall is None
    assert r.per_route["a"].precision == 0.0  # the one row sent to a was out of scope


@pytest.mark.parametrize("seed", range(6))
def test_auroc_matches_sklearn_including_ties(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    # One decimal: many ties between in-scope and out-of-scope rows.
    conf = np.round(rng.uniform(0, 1, (n, 3)), 1).astype(np.float32)
    truth = rng.integers(-1, 3, n)
    truth[:2] = [-1, 0]  # both classes present
    r = metrics(conf, truth, np.full(3, 0.5, np.float32), 0.0, ["x", "y", "z"])
    assert r.auroc == pytest.approx(roc_auc_score(truth >= 0, conf.max(axis=1)), abs=1e-12)


# --- evaluate() and `semroute eval` on a FakeEncoder index ------------------------------------

ROWS = [
    ("will it rain tomorrow", "weather"),
    ("what is the weather forecast", "weather"),
    ("cancel my subscription", "billing"),
    ("download my invoice please", "billing"),
    ("hello there", "greeting"),
    ("good morning", "greeting"),
    ("hello there my friend", "billing"),  # mislabelled on purpose: goes to greeting
    ("explain quantum entanglement", "oos"),
    ("write a sonnet about autumn leaves", "oos"),
]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "val.jsonl", ROWS)


def test_evaluate_end_to_end(fake_index: Path, data_file: Path) -> None:
    router = Router.load(fake_index)
    report, scores, truth = evaluate(router, load_labelled(data_file))
    assert (report.n, report.n_oos) == (9, 2)
    assert scores.confidence.shape == (9, 3)
    assert truth.tolist() == [0, 0, 1, 1, 2, 2, 1, -1, -1]
    decisions = [router.route(t) for t, _ in ROWS]
    right = [
        d.route == (lab if lab != "oos" else None)
        for d, (_, lab) in zip(decisions, ROWS, strict=True)
    ]
    # The report agrees with routing each row one by one.
    assert report.accuracy == pytest.approx(sum(right) / 9)
    assert report.coverage == pytest.approx(sum(d.route is not None for d in decisions) / 9)
    assert 0 <= report.in_scope_accuracy <= 1 and report.auroc is not None
    assert report.per_route["billing"].support == 3
    wrong = {row["text"]: row for row in report.misrouted}
    assert len(wrong) == 9 - sum(right)
    mislabelled = wrong["hello there my friend"]
    assert mislabelled["label"] == "billing"
    assert mislabelled["chosen"] == "greeting"
    ranked = list(mislabelled["top_scores"].items())  # best first, every route at most once
    assert ranked[0][0] == "greeting" and len(ranked) == 3
    assert [v for _, v in ranked] == sorted((v for _, v in ranked), reverse=True)
    assert ("billing", "greeting", 1) in report.confused_pairs
    assert report.latency_ms["p50"] <= report.latency_ms["p95"]
    assert report.latency_ms["queries"] == 9
    assert report.rows_in_index == 1  # "hello there" is one of greeting's utterances


def test_evaluate_honours_another_oos_label(fake_index: Path, tmp_path: Path) -> None:
    rows = [(t, "none" if lab == "oos" else lab) for t, lab in ROWS]
    data = load_labelled(write_jsonl(tmp_path / "d.jsonl", rows))
    report, _, truth = evaluate(Router.load(fake_index), data, oos_label="none")
    assert report.n_oos == 2 and (truth == -1).sum() == 2
    with pytest.raises(DataError, match="'none' \\(2 rows\\)"):
        evaluate(Router.load(fake_index), data)


def test_eval_json_prints_one_object(fake_index: Path, data_file: Path) -> None:
    code, out, _ = run("eval", "--data", str(data_file), "--index", str(fake_index), "--json")
    assert code == 0
    report = json.loads(out)
    assert {
        "accuracy",
        "in_scope_accuracy",
        "oos_precision",
        "oos_recall",
        "auroc",
        "coverage",
        "n",
        "n_oos",
        "per_route",
    } <= report.keys()
    assert (report["n"], report["n_oos"]) == (9, 2)
    assert set(report["per_route"]) == {"weather", "billing", "greeting"}
    assert {"precision", "recall", "f1", "support"} <= report["per_route"]["billing"].keys()
    assert {"route": "billing", "chosen": "greeting", "rows": 1} in report["confused_pairs"]
    direct, _, _ = evaluate(Router.load(fake_index), load_labelled(data_file))
    assert report["accuracy"] == pytest.approx(direct.accuracy)
    assert report["rows_in_index"] == 1


def test_eval_human_output(fake_index: Path, data_file: Path) -> None:
    code, out, _ = run("eval", "--data", str(data_file), "--index", str(fake_index))
    assert code == 0
    text = " ".join(out.split())  # rich wraps long lines
    assert "in-scope accuracy" in text
    assert "9 rows, 2 out of scope" in text
    assert "hello there my friend" in text  # the misrouted sample
    assert "1 of the 9 rows is one of the index's own utterances: the figures on them are" in text
    held_out = write_jsonl(
        data_file.parent / "held_out.jsonl", [r for r in ROWS if r[0] != "hello there"]
    )
    code, out, _ = run("eval", "--data", str(held_out), "--index", str(fake_index))
    assert code == 0 and "own utterances" not in out


def test_eval_plot_writes_a_png(fake_index: Path, data_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "out" / "eval.png"
    png.parent.mkdir()
    code, out, _ = run(
        "eval", "--data", str(data_file), "--index", str(fake_index), "--plot", str(png)
    )
    assert code == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    assert f"Plot written to {png}" in out


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("missing/eval.png", "missing is not a folder; create it"),
        ("val.jsonl/eval.png", "val.jsonl is not a folder; create it"),
        ("eval.txt", "a plot cannot be written as '.txt'; name a .png file"),
    ],
)
def test_eval_plot_to_a_path_it_cannot_be_written_to_is_one_line_before_routing(
    fake_index: Path, data_file: Path, where: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semroute.routing.router import Router

    def not_expected(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was routed before the --plot path was checked")

    monkeypatch.setattr(Router, "load", not_expected)
    plot = data_file.parent / where
    code, out, err = run(
        "eval", "--data", str(data_file), "--index", str(fake_index), "--plot", str(plot)
    )
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.startswith(f"error: --plot {plot}: ") and says in err and err.count("\n") == 1


def test_eval_plot_that_fails_to_write_is_one_line(
    fake_index: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semroute.cli import plot

    def denied(*args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(plot, "plot_evaluation", denied)
    png = tmp_path / "eval.png"
    code, _, err = run(
        "eval", "--data", str(data_file), "--index", str(fake_index), "--plot", str(png)
    )
    assert code == 1 and err == f"error: cannot write the plot to {png}: Permission denied\n"


def test_a_huge_misrouted_query_is_cut_in_the_table_and_whole_in_json(
    fake_index: Path, tmp_path: Path
) -> None:
    text = "hello there my friend" + " x" * 50_000  # mislabelled: goes to greeting
    data = write_jsonl(tmp_path / "val.jsonl", [*ROWS, (text, "billing")])
    code, out, _ = run("eval", "--data", str(data), "--index", str(fake_index))
    assert code == 0 and "Some misrouted queries" in out
    assert len(out) < 20_000 and out.count("x") < 300 and "…" in out
    code, out, _ = run("eval", "--data", str(data), "--index", str(fake_index), "--json")
    assert text in [row["text"] for row in json.loads(out)["misrouted"]]


def test_eval_with_an_unknown_label_is_one_error_line(fake_index: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "val.jsonl", [*ROWS, ("pay my bill", "payments")])
    code, out, err = run("eval", "--data", str(data), "--index", str(fake_index), "--json")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: {data}: ")
    assert "'payments' (1 row" in err
    assert "Traceback" not in err


def test_eval_with_bad_json_names_the_line(fake_index: Path, tmp_path: Path) -> None:
    data = tmp_path / "val.jsonl"
    data.write_text('{"text": "hello there", "label": "greeting"}\n{oops\n')
    code, _, err = run("eval", "--data", str(data), "--index", str(fake_index))
    assert code == 1
    assert err.startswith(f"error: {data}:2: not valid JSON")
