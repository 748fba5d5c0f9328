"""``semroute import``: labelled rows or a semantic-router config in, a route file out that
validates, builds and routes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from semroute import Router
from semroute.cli.main import main
from semroute.config.routes import load_routes
from semroute.errors import DataError
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from semroute.tuning.importers import import_file
from tests.conftest import DATA

IMPORT = DATA / "import"
BAD = IMPORT / "bad"
SEMROUTE = str(Path(sys.executable).parent / "semroute")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- labelled JSON lines ----------------------------------------------------------------------


def test_import_labelled_rows_one_route_per_label(tmp_path: Path) -> None:
    out = tmp_path / "routes" / "x.yaml"
    code, stdout, _ = run(
        "import", str(IMPORT / "labelled.jsonl"), "--out", str(out), "--default-model", "m"
    )
    assert code == 0
    assert f"Wrote {out}: 2 routes, 5 utterances, 2 out-of-scope examples; 4 duplicate" in stdout

    routes = load_routes(out)
    assert routes.settings.default_model == "m"
    assert {r.name: list(r.utterances) for r in routes.routes} == {
        "weather": ["will it rain today", "what is the forecast for tomorrow"],
        # "  will it rain today " was already weather's: it is not billing's too.
        "billing": [
            "cancel my subscription",
            "download my invoice",
            "why was my card charged twice",
        ],
    }
    # "oos" is not a route; its rows are examples of what no route should take.
    assert list(routes.out_of_scope) == ["tell me a joke", "who won the game last night"]
    assert routes.warnings == ()  # nothing left for validate to complain about
    assert out.read_text().startswith("# Imported from labelled.jsonl")


def test_import_report_counts_duplicates(tmp_path: Path) -> None:
    report = import_file(IMPORT / "labelled.jsonl", tmp_path / "x.yaml", default_model="m")
    # Within a label (case, spacing), across labels, within oos, and oos vs a route.
    assert (report.routes, report.utterances, report.out_of_scope, report.dropped) == (2, 5, 2, 4)
    assert report.path == tmp_path / "x.yaml"


def test_imported_routes_build_and_route(tmp_path: Path) -> None:
    out = tmp_path / "routes" / "x.yaml"
    import_file(IMPORT / "labelled.jsonl", out, default_model="m")
    build_index(out, tmp_path / "idx", encoder=FakeEncoder())
    router = Router.load(tmp_path / "idx")
    assert [r.name for r in router.routes] == ["weather", "billing"]
    assert router.index.out_of_scope == ["tell me a joke", "who won the game last night"]
    assert router.route("will it rain today").route == "weather"
    assert router.route("download my invoice").route == "billing"
    assert router.route("download my invoice").model == "m"


def test_another_oos_label_is_honoured(tmp_path: Path) -> None:
    source = IMPORT / "labelled_other_oos.jsonl"
    kept = import_file(source, tmp_path / "a.yaml", default_model="m", oos_label="none")
    assert (kept.routes, kept.out_of_scope) == (2, 1)
    routes = load_routes(tmp_path / "a.yaml")
    assert [r.name for r in routes.routes] == ["translate", "code"]
    assert routes.out_of_scope == ("what should I cook tonight",)
    # Under the default label "none" is just another route.
    plain = import_file(source, tmp_path / "b.yaml", default_model="m")
    assert (plain.routes, plain.out_of_scope) == (3, 0)
    code, stdout, _ = run(
        "import", str(source), "--out", str(tmp_path / "c.yaml"), "--oos-label", "none"
    )
    assert code == 0 and "2 routes, 4 utterances, 1 out-of-scope example" in stdout


def test_without_default_model_the_file_joins_a_routes_folder(tmp_path: Path) -> None:
    folder = tmp_path / "routes"
    folder.mkdir()
    (folder / "router.yaml").write_text("router:\n  default_model: big\n")
    import_file(IMPORT / "labelled.jsonl", folder / "imported.yaml")
    data = yaml.safe_load((folder / "imported.yaml").read_text())
    assert "router" not in data  # the folder's router block is the one
    routes = load_routes(folder)
    assert routes.settings.default_model == "big"
    assert [r.name for r in routes.routes] == ["weather", "billing"]


def test_import_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "x.yaml"
    out.write_text("# my hand-written routes\n")
    code, _, err = run(
        "import", str(IMPORT / "labelled.jsonl"), "--out", str(out), "--default-model", "m"
    )
    assert code == 1
    assert err.count("\n") == 1 and f"{out} already exists" in err and "--force" in err
    assert out.read_text() == "# my hand-written routes\n"
    code, _, _ = run(
        "import",
        str(IMPORT / "labelled.jsonl"),
        "--out",
        str(out),
        "--default-model",
        "m",
        "--force",
    )
    assert code == 0
    assert [r.name for r in load_routes(out).routes] == ["weather", "billing"]


def test_every_row_out_of_scope_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match="no route to import: of its rows, 2 labelled 'oos'"
    ) as info:
        import_file(IMPORT / "all_oos.jsonl", tmp_path / "x.yaml", default_model="m")
    assert str(info.value).startswith(f"{IMPORT / 'all_oos.jsonl'}: ")
    assert not (tmp_path / "x.yaml").exists()


def test_rows_with_no_text_are_skipped_and_counted_apart_from_duplicates(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    rows = [("", "a"), ("   ", "a"), ("hello", "b"), ("HELLO ", "c")]
    source.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    code, out, _ = run(
        "import", str(source), "--out", str(tmp_path / "x.yaml"), "--default-model", "m"
    )
    assert code == 0
    assert out.strip() == (
        f"Wrote {tmp_path / 'x.yaml'}: 1 route, 1 utterance; 1 duplicate row dropped; "
        "2 rows with no text skipped"
    )
    only = tmp_path / "only.jsonl"
    only.write_text(json.dumps({"text": "", "label": "a"}) + "\n")
    code, _, err = run(
        "import", str(only), "--out", str(tmp_path / "y.yaml"), "--default-model", "m"
    )
    assert code == 1 and err == (
        f"error: {only}: there is no route to import: of its rows, 1 with no text; "
        "add rows with text labelled with route names\n"
    )


@pytest.mark.parametrize("where", ["file/x.yaml", "/proc/semroute-test/x.yaml"])
def test_an_out_that_cannot_be_written_is_one_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("a file, not a folder\n")
    out = tmp_path / where
    args = ["import", str(IMPORT / "labelled.jsonl"), "--out", str(out), "--default-model", "m"]
    code, stdout, err = run(*args)
    assert code == 1 and stdout == "" and "Traceback" not in err
    assert err.startswith(f"error: cannot write {out}: ") and err.endswith(
        "; choose another --out\n"
    )


def test_an_empty_default_model_is_named(tmp_path: Path) -> None:
    args = ["import", str(IMPORT / "labelled.jsonl"), "--out", str(tmp_path / "x.yaml")]
    code, _, err = run(*args, "--default-model", " ")
    assert code == 1
    assert (
        err
        == "error: --default-model is empty; name the model that answers what no route matches\n"
    )
    assert not (tmp_path / "x.yaml").exists()


def test_bad_labelled_rows_name_the_line(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    source.write_text('{"text": "hi", "label": "greeting"}\n{"text": "hey"}\n')
    with pytest.raises(DataError, match=r'd\.jsonl:2: expected a non-empty string "label"'):
        import_file(source, tmp_path / "x.yaml", default_model="m")
    assert not (tmp_path / "x.yaml").exists()


def test_a_label_that_is_no_valid_route_name_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "d.jsonl"
    source.write_text('{"text": "hi", "label": " greeting"}\n')
    with pytest.raises(DataError, match="would not make a valid route file") as info:
        import_file(source, tmp_path / "x.yaml", default_model="m")
    assert str(info.value).startswith(f"{source}: ") and "\n" not in str(info.value)
    assert not (tmp_path / "x.yaml").exists()


# --- semantic-router configs ------------------------------------------------------------------

EXPECTED_ROUTES = [
    {
        "name": "politics",
        "utterances": [
            "isn't politics the best thing ever",
            "why don't you tell me about your political opinions",
            "they're going to destroy this country!",
        ],
        "description": "Questions about politics and politicians",
        "model": "gpt-4o-mini",
        # A cosine on text-embedding-3-small means nothing on semroute's encoder: kept aside.
        "metadata": {"team": "policy", "priority": 2, "semantic_router_threshold": 0.82},
    },
    {
        # The spacing variant and politics' utterance are dropped; no threshold, no metadata.
        "name": "chitchat",
        "utterances": [
            "how's the weather today?",
            "lovely weather today",
            "the weather is horrendous",
        ],
        "model": "claude-3-haiku",
    },
    {"name": "support", "utterances": ["my order never arrived", "I want a refund"]},
]


@pytest.mark.parametrize("source", ["router.json", "router.yaml"])
def test_import_semantic_router_config(source: str, tmp_path: Path) -> None:
    out = tmp_path / "routes" / "from-sr.yaml"
    report = import_file(IMPORT / source, out)
    assert (report.routes, report.utterances, report.out_of_scope, report.dropped) == (3, 8, 0, 2)
    data = yaml.safe_load(out.read_text())
    assert data == {"routes": EXPECTED_ROUTES}  # encoder_type / encoder_name are not carried
    (out.parent / "router.yaml").write_text("router: {default_model: big, threshold: 0.3}\n")
    routes = load_routes(out.parent)
    politics, chitchat, support = routes.routes
    assert (politics.model, politics.threshold, dict(politics.metadata)) == (
        "gpt-4o-mini",
        None,
        {"team": "policy", "priority": 2, "semantic_router_threshold": 0.82},
    )
    assert report.notes and "thresholds not copied (politics 0.82)" in report.notes[0]
    assert "'text-embedding-3-small'" in report.notes[0]
    assert (chitchat.model, chitchat.threshold, chitchat.description) == (
        "claude-3-haiku",
        None,
        None,
    )
    assert routes.model_for(support) == "big" and routes.threshold_for(support) == 0.3
    build_index(out.parent, tmp_path / "idx", encoder=FakeEncoder())
    d = Router.load(tmp_path / "idx").route("I want a refund")
    assert (d.route, d.model) == ("support", "big")


def test_import_semantic_router_config_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "from-sr.yaml"
    code, stdout, _ = run(
        "import", str(IMPORT / "router.json"), "--out", str(out), "--default-model", "big"
    )
    assert code == 0
    assert "3 routes, 8 utterances; 2 duplicate rows dropped" in stdout
    assert load_routes(out).settings.default_model == "big"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not_json.json", "cannot read it as a router config"),
        ("not_yaml.yaml", "cannot read it as a router config"),
        ("labelled_rows.json", "pass a .jsonl file of labelled rows"),
        ("no_routes.json", 'a "routes" list'),
        ("not_a_mapping.json", 'routes[0] has no "name"'),  # read as a bare list of routes
        ("routes_not_a_list.json", 'a "routes" list'),
        ("route_without_name.json", 'routes[1] has no "name"'),
        ("utterances_not_strings.json", "routes[0].utterances must be a list of strings"),
        ("utterances_a_string.json", "routes[0].utterances must be a list of strings"),
        ("utterances_missing.json", "routes[0].utterances must be a list of strings"),
        ("threshold_above_one.json", "routes[0].score_threshold should be a number from 0 to 1"),
    ],
)
def test_bad_router_configs_are_one_line_errors_naming_the_file(
    name: str, message: str, tmp_path: Path
) -> None:
    source = BAD / name
    out = tmp_path / "x.yaml"
    with pytest.raises(DataError) as info:
        import_file(source, out, default_model="m")
    text = str(info.value)
    assert text.startswith(f"{source}: ")
    assert message in text
    assert "\n" not in text
    assert not out.exists()


def test_bad_input_on_the_command_line_is_one_red_line(tmp_path: Path) -> None:
    source = tmp_path / "router.json"
    shutil.copy(BAD / "route_without_name.json", source)
    proc = subprocess.run(
        [SEMROUTE, "import", str(source), "--out", str(tmp_path / "x.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {source}: ")
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.yaml").exists()


def test_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("import", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x.yaml"))
    assert code == 2 and "does not exist" in err


# --- semantic-router's thresholds ---------------------------------------------------------------

ROUTES_ON_MINILM = {
    "weather": ["how's the weather today?", "will it rain tomorrow?", "is it going to snow?"],
    "politics": ["who should I vote for in the election?", "what do you think of the president?"],
    "cooking": ["how long should I boil an egg?", "give me a recipe for lasagna"],
    "travel": ["find me a cheap flight to Rome", "do I need a visa for Canada?"],
    "fitness": ["give me a workout plan for beginners", "how do I train for a marathon?"],
    "finance": ["how should I invest my savings?", "explain index funds to me"],
}
# Near paraphrases of the examples, and queries close to none of them. Under the default hybrid
# scorer with the thresholds copied as they are, the first two went to the default model and the
# third to `weather`: semantic-router decides otherwise on each.
QUERIES = [
    "a beginner's workout plan",
    "how should I invest my money?",
    "is rain expected today?",
    "will it snow tomorrow?",
    "who should I vote for?",
    "how long to boil an egg?",
    "what's your take on the president?",
    "give me a recipe for pasta",
    "write a haiku about autumn",
]


def _semantic_router_config(tmp_path: Path, encoder: str | None, as_list: bool = False) -> Path:
    routes = [
        {"name": name, "utterances": texts, "score_threshold": 0.82}
        for name, texts in ROUTES_ON_MINILM.items()
    ]
    data: object = routes
    if not as_list:
        data = {"encoder_type": "huggingface", "encoder_name": encoder, "routes": routes}
    source = tmp_path / "router.json"
    source.write_text(json.dumps(data), encoding="utf-8")
    return source


def test_thresholds_on_semroutes_encoder_keep_semantic_routers_decisions(
    model_cache: Path, tmp_path: Path
) -> None:
    """semantic-router routes a query when its cosine similarity to the top route's closest
    example is over that route's threshold. On the same encoder, the imported router (scorer
    `nearest`) routes the same queries to the same routes, and no others."""
    source = _semantic_router_config(tmp_path, "sentence-transformers/all-MiniLM-L6-v2")
    out = tmp_path / "routes" / "imported.yaml"
    report = import_file(source, out, default_model="big")
    assert "thresholds kept" in report.notes[0] and "router.scorer: nearest" in report.notes[0]
    routes = load_routes(out)
    assert routes.settings.scorer == "nearest"
    assert {r.threshold for r in routes.routes} == {0.82}
    build_index(out.parent, tmp_path / "idx")
    router = Router.load(tmp_path / "idx")
    names = list(ROUTES_ON_MINILM)
    examples = [(name, text) for name in names for text in ROUTES_ON_MINILM[name]]
    vectors = router.encoder.encode([text for _, text in examples]).vectors
    expected = []
    for query in QUERIES:
        sims = vectors @ router.encoder.encode([query]).vectors[0]
        best = int(np.argmax(sims))
        expected.append(examples[best][0] if sims[best] > 0.82 else None)
    got = [router.route(query).route for query in QUERIES]
    assert got == expected
    assert got[:4] == ["fitness", "finance", None, "weather"]
    assert got[-1] is None


def test_thresholds_are_not_copied_without_a_router_block_to_set_the_scorer(
    tmp_path: Path,
) -> None:
    source = _semantic_router_config(tmp_path, "sentence-transformers/all-MiniLM-L6-v2")
    out = tmp_path / "imported.yaml"
    code, _, err = run("import", str(source), "--out", str(out))
    assert code == 0
    assert "warning: thresholds not copied (weather 0.82" in err
    assert "pass --default-model" in err
    data = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert "router" not in data
    assert all("threshold" not in r for r in data["routes"])
    assert data["routes"][0]["metadata"] == {"semantic_router_threshold": 0.82}


def test_semantic_routers_bare_list_of_routes_is_imported(tmp_path: Path) -> None:
    source = _semantic_router_config(tmp_path, None, as_list=True)
    out = tmp_path / "imported.yaml"
    report = import_file(source, out, default_model="big")
    assert (report.routes, report.utterances) == (6, 13)
    # A list does not say which encoder made its thresholds: they are not trusted.
    assert "does not name its encoder" in report.notes[0]
    assert load_routes(out).settings.scorer == "hybrid"
    yaml_source = tmp_path / "router.yaml"
    yaml_source.write_text(yaml.safe_dump(json.loads(source.read_text())), encoding="utf-8")
    assert import_file(yaml_source, tmp_path / "y.yaml").routes == 6
