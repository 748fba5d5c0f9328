"""`semroute tune` end to end through the CLI, with the real default model on the CPU.

The route file (tests/data/tune) holds two CLINC150 routes the stock encoder confuses
(change_ai_name and change_user_name: 80% of their held-out rows go to the right one) and a
third, clear one; one epoch of tuning must separate them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.encoders.base import ONNX_FILE

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "tune"
ROUTES = DATA / "routes.yaml"


def _cli(*args: str | Path) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(*args: str | Path) -> str:
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    return str(result.output)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("tune") / "encoder"
    output = _ok("tune", ROUTES, "--out", out, "--val", DATA / "val.jsonl", "--epochs", 1, "--json")
    return out, json.loads(output[output.index("{") :])


def _closed_set(index: Path) -> float:
    report = json.loads(_ok("eval", "--data", DATA / "heldout.jsonl", "--index", index, "--json"))
    return float(report["closed_set_accuracy"])


@pytest.fixture(scope="module")
def st_model() -> Any:
    from semroute.encoders.export import locate_model
    from semroute.tuning import finetune

    model = finetune._load(locate_model("sentence-transformers/all-MiniLM-L6-v2"))
    model.eval()  # no dropout: two ways of embedding must give the same vectors
    return model


@pytest.mark.model
def test_texts_embedded_in_length_groups_are_those_of_one_padded_batch(
    st_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from semroute.tuning import finetune

    # Lengths out of order, more texts than one group, so sorting and putting back both count.
    texts = [("word " * n).strip() + f" {i}" for i, n in enumerate([30, 2, 15, 1, 60, 8] * 6)]
    assert len(texts) > 2 * finetune.EMBED_CHUNK
    with torch.no_grad():
        grouped = finetune._embed(st_model, texts)
        whole = st_model(finetune._features(st_model, texts))["sentence_embedding"]
    assert torch.allclose(grouped, whole, atol=1e-5)
    # No deprecation notice from sentence-transformers in the user's terminal.
    assert "deprecated" not in caplog.text


@pytest.mark.model
def test_route_centroids_from_one_encode_call_are_each_routes_own(st_model: Any) -> None:
    import numpy as np

    from semroute.tuning import finetune

    routes = {
        "short": ["hi", "hello there"],
        "many": [f"what is the weather on day {i}" for i in range(finetune.CENTROID_ROWS + 5)],
        "one": ["book me a table for two tonight"],
    }
    got = finetune._centroids(st_model, finetune.TrainingSet(routes))
    for row, texts in zip(got, routes.values(), strict=True):
        mean = finetune._encode(st_model, texts[: finetune.CENTROID_ROWS]).mean(0)
        assert np.allclose(row, mean / np.linalg.norm(mean), atol=1e-5)


@pytest.mark.model
def test_the_proxy_loss_pushes_away_routes_outside_the_batch(st_model: Any) -> None:
    import copy

    import torch

    from semroute.tuning import finetune

    data = finetune.TrainingSet(
        {
            "weather": ["will it rain today", "what is the forecast for tomorrow"],
            "music": ["play some jazz", "put on my running playlist"],
            "forecast_alerts": ["tell me when rain is coming", "warn me before a storm"],
        }
    )
    model = copy.deepcopy(st_model)  # the step leaves gradients on the model
    proxies = finetune._proxies(model, data)
    start = proxies.weight.detach().clone()
    # The proxies start at the stock model's route centroids, one row per route.
    assert torch.allclose(start, torch.tensor(finetune._centroids(model, data)), atol=1e-6)
    batch = finetune._Batch(
        anchors=["will it rain today", "play some jazz"],
        positives=["what is the forecast for tomorrow", "put on my running playlist"],
        negatives=[],
        routes=["weather", "music"],
    )
    optimiser = torch.optim.SGD([proxies.weight], lr=0.5)  # the proxies alone move
    schedule = finetune._schedule(optimiser, 10, 0.0)
    model.eval()  # no dropout: the same vectors before and after
    finetune._step(model, batch, finetune.Recipe(), optimiser, schedule, proxies)
    alerts = proxies.rows["forecast_alerts"]
    with torch.no_grad():
        weather = torch.nn.functional.normalize(finetune._embed(model, batch.anchors[:1]), dim=-1)
    before = (weather @ torch.nn.functional.normalize(start[alerts], dim=-1)).item()
    after = (weather @ torch.nn.functional.normalize(proxies.weight[alerts], dim=-1)).item()
    # A route not in the batch took part: its proxy moved away from the weather anchor.
    assert after < before - 0.01


@pytest.mark.model
def test_tuned_encoder_separates_routes_the_stock_one_confuses(
    tuned: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    encoder, result = tuned
    _ok("build-index", ROUTES, "--out", tmp_path / "stock")
    _ok("build-index", ROUTES, "--encoder", encoder, "--out", tmp_path / "tuned")
    assert _closed_set(tmp_path / "stock") <= 0.8
    assert _closed_set(tmp_path / "tuned") >= 0.9
    # The figures tune reports, on --val, before and after.
    assert result["epochs_run"] == 1
    for side in ("before", "after"):
        assert set(result[side]) >= {"accuracy", "in_scope_accuracy", "oos_recall", "auroc"}
    assert result["after"]["in_scope_accuracy"] > result["before"]["in_scope_accuracy"]
    assert result["helped"] is True
    assert result["validation_rows"] == 40 and result["validation_in_training"] == 0


@pytest.mark.model
def test_route_file_encoder_folder_and_info(
    tuned: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """`router.encoder: ./DIR` in a route file uses the folder; info shows where it came from."""
    encoder, result = tuned
    routes = tmp_path / "routes"
    routes.mkdir()
    shutil.copytree(encoder, routes / "tuned")
    text = ROUTES.read_text().replace(
        "  default_model: gpt-4o-mini", "  default_model: gpt-4o-mini\n  encoder: ./tuned"
    )
    (routes / "routes.yaml").write_text(text)
    _ok("build-index", routes, "--out", tmp_path / "index")
    info = json.loads(_ok("info", "--index", tmp_path / "index", "--json"))
    assert info["encoder"]["name"].endswith(result["data_fingerprint"][:12])
    assert info["tuned"]["base"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["tuned"]["after"] == result["after"]
    shown = _ok("info", "--index", tmp_path / "index")
    assert "tuned from sentence-transformers/all-MiniLM-L6-v2" in shown


@pytest.mark.model
def test_a_damaged_tuned_folder_is_refused(
    tuned: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    encoder = tmp_path / "encoder"
    shutil.copytree(tuned[0], encoder)
    with (encoder / ONNX_FILE).open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = _cli("build-index", ROUTES, "--encoder", encoder, "--out", tmp_path / "index")
    assert result.exit_code == 1
    assert "damaged (model.onnx differs from what was exported)" in result.output
    assert not (tmp_path / "index").exists()


@pytest.mark.model
@pytest.mark.model
def test_validation_rows_that_are_training_texts_are_counted_and_warned_of(
    tmp_path: Path,
) -> None:
    rows = [json.loads(line) for line in (DATA / "val.jsonl").read_text().splitlines()]
    leaked = [
        {"text": "rename yourself to betty", "label": "change_ai_name"},  # a route utterance
        {"text": "call me tim from now on", "label": "change_user_name"},  # a --data row
    ]
    data = _write(tmp_path / "data.jsonl", leaked[1:])
    val = _write(tmp_path / "val.jsonl", rows + leaked)
    out = _ok(
        "tune", ROUTES, "--out", tmp_path / "enc", "--val", val, "--data", data, "--epochs", 1
    )
    said = " ".join(out.split())
    assert "2 of the 42 validation rows are also training texts" in said
    record = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    assert record["tuned"]["validation_in_training"] == 2


def test_a_tuned_folder_as_base_is_refused_naming_its_model(
    tuned: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    encoder, record = tuned
    result = _cli("tune", ROUTES, "--out", tmp_path / "again", "--base", encoder)
    assert result.exit_code == 1 and "is a prepared encoder folder" in result.output
    assert f"--base {encoder}" in " ".join(result.output.split())
    assert f"({record['base']} for this one)" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "again").exists()


def test_routing_with_a_tuned_index_imports_no_torch(
    tuned: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _ok("build-index", ROUTES, "--encoder", tuned[0], "--out", tmp_path / "index")
    script = (
        "import json, sys\n"
        "from semroute import Router\n"
        f"d = Router.load({str(tmp_path / 'index')!r}).route('what is the weather like today')\n"
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
        "print(json.dumps({'route': d.route, 'heavy': heavy}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"route": "weather", "heavy": []}


@pytest.mark.model
@pytest.mark.parametrize("existing", [False, True])
def test_an_interrupted_tune_leaves_no_half_folder(tmp_path: Path, existing: bool) -> None:
    """Ctrl-C during training: nothing at --out (or the previous encoder, untouched), and no
    leftover folder beside it."""
    from semroute.tuning.tune import TuneRequest, tune_encoder

    out = tmp_path / "encoder"
    if existing:
        out.mkdir()
        (out / "encoder.json").write_text('{"previous": true}')

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tune_encoder(TuneRequest(ROUTES, out, epochs=1), progress=interrupt)
    if existing:
        assert [p.name for p in out.iterdir()] == ["encoder.json"]
        assert json.loads((out / "encoder.json").read_text()) == {"previous": True}
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".encoder.")) == [
        ".encoder.lock"
    ]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _epoch(routes: dict[str, list[str]], oos: list[str], seed: int = 0) -> list[Any]:
    import random

    from semroute.tuning.finetune import Recipe, TrainingSet, _batches

    return _batches(TrainingSet(routes, oos), Recipe(batch=4), random.Random(seed))


@pytest.mark.parametrize("seed", range(5))
def test_an_epoch_pairs_each_utterance_once_at_most_and_never_one_route_with_itself(
    seed: int,
) -> None:
    routes = {r: [f"{r}{i}" for i in range(6)] for r in "abcdefghij"}
    batches = _epoch(routes, [f"o{i}" for i in range(20)], seed)
    anchors = [t for b in batches for t in b.anchors]
    route_of = {t: r for r, texts in routes.items() for t in texts}
    assert len(set(anchors)) == len(anchors)  # each at most once
    left = set(route_of) - set(anchors)  # only a route left alone at the end keeps some
    assert len({route_of[t] for t in left}) <= 1 and len(left) <= 5
    for b in batches:
        assert len(set(b.routes)) == len(b.routes) >= 2 and len(b.negatives) == 8
        for anchor, positive, route in zip(b.anchors, b.positives, b.routes, strict=True):
            assert anchor != positive and {anchor, positive} <= set(routes[route])


def test_a_route_left_alone_takes_no_steps_even_with_out_of_scope_negatives() -> None:
    routes = {"big": [f"big{i}" for i in range(200)]} | {
        r: [f"{r}{i}" for i in range(5)] for r in "abc"
    }
    batches = _epoch(routes, [f"o{i}" for i in range(20)])
    assert len(batches) == 5  # the small routes' five rounds; not 195 more of "big" alone
    assert all(len(b.routes) == 4 for b in batches)


@pytest.mark.parametrize(("ran", "said"), [(1, "1 epoch (kept epoch 1)"), (3, "3 epochs (kept")])
def test_the_summary_counts_epochs_in_words(
    capsys: pytest.CaptureFixture[str], ran: int, said: str
) -> None:
    from semroute.cli.tune import _print

    result = {"base": "m", "rows": 4, "routes": 2, "out_of_scope": 0, "epochs_run": ran}
    _print(result | {"best_epoch": 1, "train_seconds": 1.0, "encoder": "enc"})
    assert said in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_numpy_cannot_take_is_refused_up_front(tmp_path: Path, seed: int) -> None:
    from semroute.errors import SemrouteError
    from semroute.tuning.tune import TuneRequest

    result = _cli("tune", ROUTES, "--out", tmp_path / "enc", "--seed", str(seed))
    assert result.exit_code == 2 and "Invalid value for '--seed'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "enc").exists()
    with pytest.raises(SemrouteError, match=f"seed {seed} is out of range"):
        TuneRequest(ROUTES, tmp_path / "enc", seed=seed)
    TuneRequest(ROUTES, tmp_path / "enc", seed=2**32 - 1)  # the largest is taken


def test_validation_rows_all_out_of_scope_are_refused_before_training(tmp_path: Path) -> None:
    val = _write(
        tmp_path / "val.jsonl",
        [{"text": "what is the weather on mars", "label": "oos"}, {"text": "hi", "label": "oos"}],
    )
    result = _cli("tune", ROUTES, "--out", tmp_path / "enc", "--val", val)
    assert result.exit_code == 1 and "all 2 rows are labelled 'oos'" in result.output
    assert "add rows labelled with route names" in result.output
    assert not (tmp_path / "enc").exists()


def test_unknown_labels_are_refused_before_training(tmp_path: Path) -> None:
    data = _write(tmp_path / "extra.jsonl", [{"text": "rename the bot", "label": "rename_bot"}])
    result = _cli("tune", ROUTES, "--out", tmp_path / "enc", "--data", data)
    assert result.exit_code == 1
    assert "1 label names no route of the route files" in result.output
    assert "'rename_bot' (1 row)" in result.output and "add those routes to the route files" in (
        result.output
    )
    assert "index" not in result.output
    val = _write(tmp_path / "val.jsonl", [{"text": "hi", "label": "greeting"}])
    result = _cli("tune", ROUTES, "--out", tmp_path / "enc", "--val", val)
    assert result.exit_code == 1 and "'greeting' (1 row)" in result.output
    assert "no route of the route files" in result.output
    assert not (tmp_path / "enc").exists()


def test_too_little_data_is_refused(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "router: {default_model: m}\n"
        "routes:\n"
        "  - {name: a, model: m, utterances: [one, two]}\n"
        "  - {name: b, model: m, utterances: [three]}\n"
    )
    result = _cli("tune", routes, "--out", tmp_path / "enc")
    assert result.exit_code == 1
    assert "only 1 route with two or more utterances" in result.output
    empty = _write(tmp_path / "empty.jsonl", [])
    result = _cli("tune", ROUTES, "--out", tmp_path / "enc", "--data", empty)
    assert result.exit_code == 1 and "holds no rows" in result.output


def test_missing_files_and_non_encoder_out_are_refused(tmp_path: Path) -> None:
    result = _cli("tune", tmp_path / "nope.yaml", "--out", tmp_path / "enc")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = _cli("tune", ROUTES, "--out", tmp_path / "enc", "--val", tmp_path / "nope.jsonl")
    assert result.exit_code == 2 and "does not exist" in result.output
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = _cli("tune", ROUTES, "--out", mine)
    assert result.exit_code == 1 and "not an encoder, which tune would delete" in result.output
    assert "holds 1 file that is not" in result.output
    assert (mine / "notes.txt").read_text() == "keep me"
    (mine / "more.txt").write_text("and me")
    result = _cli("tune", ROUTES, "--out", mine)
    assert result.exit_code == 1 and "holds 2 files that are not" in result.output


def test_without_torch_it_says_what_to_install(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from semroute.cli.main import main\n"
        f"main(['tune', {str(ROUTES)!r}, '--out', {str(tmp_path / 'enc')!r}])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: semroute tune needs torch, which is not installed; run: "
        "pip install 'semroute[tune]'"
    ]
    assert not (tmp_path / "enc").exists()
