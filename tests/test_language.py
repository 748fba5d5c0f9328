"""The language warning: a query that is probably not English, routed with an English-only
encoder, says so in its decision (`route --json`, Decision.to_dict, `/v1/route`)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from semroute import Router
from semroute.cli.main import main
from semroute.routing.language import english_only, language_warning
from semroute.testing import FakeEncoder
from semroute.tuning.build import build_index
from tests.conftest import DATA, ROOT
from tests.gateway_kit import Served

FRENCH = [
    "pourquoi mon script Python lève-t-il une erreur de clé ?",
    "quel temps fera-t-il demain à Paris ?",
    "traduis bonjour en anglais s'il te plaît",
    "je voudrais annuler ma commande",
    "comment puis-je réinitialiser mon mot de passe",
    "résume cet article pour moi",
]
SPANISH = [
    "¿por qué mi script de Python lanza un error?",
    "¿qué tiempo hará mañana en Madrid?",
    "quiero cancelar mi pedido",
    "¿cómo puedo restablecer mi contraseña?",
    "resume este artículo por favor",
    "necesito ayuda con mi factura",
]
OTHER_SCRIPTS = ["Привет, как мне сбросить пароль?", "今天天气怎么样", "مرحبا كيف حالك اليوم"]
ENGLISH_WITH_TYPOS = [
    "why dose my pyhton scirpt raise KeyEror?",
    "whats teh wether like tommorow in paris",
    "translte good mornign into spanish",
    "i wnat to cancle my ordr",
    "how cna i rest my pasword",
    "sumarize this artcle for me plz",
    "café au lait recipe",  # a loan phrase
    "explain the difference between de jure and de facto",
    "bonjour",  # one word: too little to judge
]


@pytest.mark.parametrize("query", FRENCH + SPANISH + OTHER_SCRIPTS)
def test_french_spanish_and_other_scripts_get_the_warning(query: str) -> None:
    warning = language_warning(query)
    assert warning is not None and "English-only" in warning


@pytest.mark.parametrize("query", ENGLISH_WITH_TYPOS)
def test_english_with_typos_gets_none(query: str) -> None:
    assert language_warning(query) is None


def _english_texts() -> list[str]:
    lines = (DATA / "clinc150_sample.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]

    def walk(value: object) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(yaml.safe_load((DATA / "bundled_queries.yaml").read_text(encoding="utf-8")))
    for file in sorted((ROOT / "routes").glob("*.yaml")):
        walk(yaml.safe_load(file.read_text(encoding="utf-8")))
    return texts


def test_no_english_query_of_the_projects_data_is_flagged() -> None:
    texts = _english_texts()
    assert len(texts) > 400
    assert [t for t in texts if language_warning(t)] == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", True),
        ("/models/all-mpnet-base-v2/", True),
        ("BAAI/bge-small-en-v1.5", True),
        ("intfloat/e5-small-v2", True),
        ("sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2", False),
        ("intfloat/multilingual-e5-small", False),
        ("BAAI/bge-m3", False),
        ("fake", False),
    ],
)
def test_which_encoders_are_english_only(name: str, expected: bool) -> None:
    assert english_only(name) is expected


def test_route_json_and_v1_route_carry_the_warning(bundled_index: Path) -> None:
    out = CliRunner().invoke(
        main, ["route", "--index", str(bundled_index), "--json", SPANISH[0], ENGLISH_WITH_TYPOS[0]]
    )
    assert out.exit_code == 0, out.output
    spanish, typos = (json.loads(line) for line in out.stdout.splitlines())
    assert "English-only" in spanish["language_warning"]
    assert typos["language_warning"] is None
    human = CliRunner().invoke(main, ["route", "--index", str(bundled_index), FRENCH[3]])
    assert "warning: this query looks like it is not English" in human.stdout
    with Served(bundled_index) as served:
        body = {"messages": [{"role": "user", "content": FRENCH[0]}]}
        answer = httpx.post(served.url + "/v1/route", json=body, timeout=30).json()
    assert "English-only" in answer["language_warning"]


def test_an_encoder_not_known_to_be_english_only_gives_no_warning(tmp_path: Path) -> None:
    data = {
        "router": {"default_model": "m", "encoder": "fake"},
        "routes": [{"name": "greet", "utterances": ["hello there"]}],
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    build_index(tmp_path / "r.yaml", tmp_path / "idx", encoder=FakeEncoder())
    decision = Router.load(tmp_path / "idx", encoder=FakeEncoder()).route(SPANISH[2])
    assert decision.language_warning is None
    assert decision.to_dict()["language_warning"] is None
