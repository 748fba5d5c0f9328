"""A local model folder (`--encoder ./folder`, `router.encoder: ./folder`) that is incomplete or
damaged is refused in one line naming the file and the field, before any export work.

Each case is a copy of the default model's folder (its small files copied, its weights linked)
with one file broken, run through the real CLI.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from semroute.cli.main import main
from semroute.config.routes import DEFAULT_ENCODER
from semroute.encoders.bert_onnx import UnsupportedCheckpoint, read_checkpoint
from semroute.errors import EncoderError
from tests.conftest import write_routes

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def default_model(model_cache: Path) -> Path:
    from semroute.encoders.export import locate_model

    return locate_model(DEFAULT_ENCODER)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model cache of the test's own, so what a refusal left there can be seen."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEMROUTE_CACHE", str(folder))
    return folder


def _copy(source: Path, folder: Path) -> Path:
    """The model's folder, its small files copied (so they can be broken) and its weights linked
    (never written to: breaking them would break the shared original)."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    return folder


def _set(file: str, **values: object) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        data = json.loads((folder / file).read_text())
        data.update(values)
        (folder / file).write_text(json.dumps(data))

    return change


def _drop(file: str, key: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        data = json.loads((folder / file).read_text())
        del data[key]
        (folder / file).write_text(json.dumps(data))

    return change


def _write(file: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / file).write_text(text)


def _build_index(folder: Path, tmp_path: Path, *args: str) -> str:
    """Run `semroute build-index` with ``folder`` as the encoder; the one error line it prints."""
    routes = write_routes(tmp_path / "routes")
    result = CliRunner().invoke(
        main, ["build-index", str(routes), "--out", str(tmp_path / "index"), *args]
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().endswith(errors[0]), result.stderr
    assert not (tmp_path / "index").exists()
    return errors[0]


# -- 1. a folder without tokenizer.json ------------------------------------------------------


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_a_folder_without_tokenizer_json_is_refused_before_any_export(
    default_model: Path, tmp_path: Path, cache: Path, model_type: str
) -> None:
    """Both exporters: the torch-free one (BERT) and sentence-transformers' (any other type),
    which would otherwise build a tokenizer of a few special tokens and route wrongly."""
    folder = _copy(default_model, tmp_path / "model")
    _set("config.json", model_type=model_type)(folder)
    (folder / "tokenizer.json").unlink()
    line = _build_index(folder, tmp_path, "--encoder", str(folder))
    assert f"encoder '{folder}': {folder} has no tokenizer.json" in line
    assert "copy the model's tokenizer.json into it" in line
    assert not (cache / "onnx").exists()  # refused before any export began


def test_a_route_files_encoder_folder_without_tokenizer_json_is_refused(
    default_model: Path, tmp_path: Path, cache: Path
) -> None:
    folder = _copy(default_model, tmp_path / "routes" / "model")
    (folder / "tokenizer.json").unlink()
    router = "router:\n  default_model: frontier-model\n  encoder: ./model\n"
    routes = write_routes(tmp_path / "routes", router=router)
    result = CliRunner().invoke(main, ["build-index", str(routes), "--out", str(tmp_path / "i")])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "has no tokenizer.json" in line
    assert not (cache / "onnx").exists()


def test_each_exporter_refuses_a_folder_without_tokenizer_json(
    default_model: Path, tmp_path: Path
) -> None:
    """Called directly (as `semroute tune` does), the exporters refuse it too, the torch one
    before it loads the model."""
    from semroute.encoders.convert import export_onnx

    folder = _copy(default_model, tmp_path / "model")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(EncoderError, match=r"has no tokenizer\.json") as info:
        read_checkpoint(folder, "m")
    assert not isinstance(info.value, UnsupportedCheckpoint)  # no exporter falls back to torch
    (tmp_path / "out").mkdir()
    with pytest.raises(EncoderError, match=r"has no tokenizer\.json"):
        export_onnx(folder, tmp_path / "out", name="m", source_hash="h")
    assert list((tmp_path / "out").iterdir()) == []


# -- 2. damaged files: one line naming the file and the field ---------------------------------

BIG = 10**12
SIZES = ["hidden_size", "num_attention_heads", "num_hidden_layers"]

DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "config.json only a model_type": (
        _write("config.json", '{"model_type": "bert"}'),
        r"config\.json has no hidden_size",
    ),
    "config.json not JSON": (
        _write("config.json", "{"),
        r"config\.json is unreadable \(JSONDecodeError\)",
    ),
    "config.json an array": (_write("config.json", "[]"), r"config\.json is not a JSON object"),
    "model_type missing": (_drop("config.json", "model_type"), r"config\.json has no model_type"),
    "model_type a number": (
        _set("config.json", model_type=1),
        r"config\.json has model_type 1, not text",
    ),
    "hidden_act a list": (
        _set("config.json", hidden_act=["gelu"]),
        r"config\.json has hidden_act an array, not text",
    ),
    "position_embedding_type null": (
        _set("config.json", position_embedding_type=None),
        r"config\.json has position_embedding_type null, not text",
    ),
    **{
        f"{key} missing": (_drop("config.json", key), rf"config\.json has no {key};")
        for key in SIZES
    },
    **{
        f"{key} {value!r}": (
            _set("config.json", **{key: value}),
            rf"config\.json has {key} {shown}, not a whole number from 1 to \d+;",
        )
        for key in [*SIZES, "max_position_embeddings"]
        for value, shown in [
            ("x", '"x"'),
            (384.0, r"384\.0"),
            (True, "true"),
            (-1, "-1"),
            (0, "0"),
            (BIG, str(BIG)),
            (None, "null"),
        ]
    },
    **{
        f"layer_norm_eps {value!r}": (
            _set("config.json", layer_norm_eps=value),
            rf"config\.json has layer_norm_eps {shown}, not a number between 0 and 1;",
        )
        for value, shown in [
            ("x", '"x"'),
            (True, "true"),
            (-1e-12, r"-1e-12"),
            (0, "0"),
            (float(BIG), r"1000000000000\.0"),
            (float("nan"), "NaN"),
        ]
    },
    "hidden_size not the weights'": (
        _set("config.json", hidden_size=768),
        r"config\.json has hidden_size 768, but model\.safetensors has 384;",
    ),
    "hidden_size not a multiple of the heads": (
        _set("config.json", num_attention_heads=7),
        r"config\.json: hidden_size 384 is not a multiple of num_attention_heads 7;",
    ),
    "fewer layers than the weights": (
        _set("config.json", num_hidden_layers=5),
        r"config\.json has num_hidden_layers 5, but model\.safetensors has 6;",
    ),
    "more layers than the weights": (
        _set("config.json", num_hidden_layers=7),
        r"config\.json has num_hidden_layers 7, but model\.safetensors has 6;",
    ),
    "a longer position table than the weights'": (
        _set("config.json", max_position_embeddings=1024),
        r"config\.json has max_position_embeddings 1024, but model\.safetensors has 512;",
    ),
    "tokenizer.json not JSON": (
        _write("tokenizer.json", "not json"),
        r"tokenizer\.json is unreadable \(JSONDecodeError\)",
    ),
    "tokenizer.json an array": (
        _write("tokenizer.json", "[]"),
        r"tokenizer\.json is not a JSON object",
    ),
    "tokenizer.json not a tokenizer": (
        _write("tokenizer.json", '{"version": "1.0", "model": {}}'),
        r"tokenizer\.json is not a tokenizer the tokenizers library reads",
    ),
    "modules.json not JSON": (
        _write("modules.json", "]"),
        r"modules\.json is unreadable \(JSONDecodeError\)",
    ),
    "modules.json a list of numbers": (
        _write("modules.json", "[1]"),
        r"modules\.json is not a list of modules",
    ),
    "modules.json's Pooling without a path": (
        _write("modules.json", '[{"type": "sentence_transformers.models.Pooling"}]'),
        r"modules\.json: the Pooling module has no text path",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_model_folder_is_refused_in_one_line(
    default_model: Path, tmp_path: Path, cache: Path, case: str
) -> None:
    change, message = DAMAGE[case]
    folder = _copy(default_model, tmp_path / "model")
    change(folder)
    line = _build_index(folder, tmp_path, "--encoder", str(folder))
    assert line.startswith(f"error: encoder '{folder}': {folder}/"), line
    assert " again from where the model came from" in line, line
    assert re.search(message, line), line


def test_the_untouched_copy_is_accepted(default_model: Path, tmp_path: Path) -> None:
    """The damage above is all that makes those copies fail."""
    checkpoint = read_checkpoint(_copy(default_model, tmp_path / "model"), "m")
    assert (checkpoint.hidden, checkpoint.heads, checkpoint.layers) == (384, 12, 6)
    assert checkpoint.max_tokens == 256
