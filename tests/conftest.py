from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result

from semroute.testing.fake_provider import FakeProvider
from tests.redis_kit import redis_server, redis_url  # noqa: F401 (fixtures)

# The whole suite runs offline: the model comes from a PyPI package, never from the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

ROUTER_YAML = """\
router:
  default_model: frontier-model
  encoder: fake
  threshold: 0.5
"""

ROUTES_YAML = """\
routes:
  - name: weather
    model: weather-model
    utterances:
      - what is the weather forecast for tomorrow
      - will it rain today
      - how hot will it be this weekend
  - name: billing
    model: billing-model
    threshold: 0.6
    utterances:
      - why was my credit card charged twice
      - cancel my subscription plan
      - download my invoice
  - name: greeting
    utterances:
      - hello there
      - good morning friend
"""


def one_error_line(result: Result) -> str:
    """The one line a refused command printed (exit 1, no traceback, nothing on stdout)."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_routes(folder: Path, routes: str = ROUTES_YAML, router: str = ROUTER_YAML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "router.yaml").write_text(textwrap.dedent(router))
    (folder / "routes.yaml").write_text(textwrap.dedent(routes))
    return folder


@pytest.fixture
def routes_dir(tmp_path: Path) -> Path:
    return write_routes(tmp_path / "routes")


@pytest.fixture
def fake_index(tmp_path: Path, routes_dir: Path) -> Path:
    from semroute.testing import FakeEncoder
    from semroute.tuning.build import build_index

    out = tmp_path / "indexes" / "default"
    build_index(routes_dir, out, encoder=FakeEncoder())
    return out


@pytest.fixture(scope="session")
def model_cache(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A cache for the real model's ONNX export that survives between test runs."""
    cache = Path(request.config.cache.mkdir("semroute-model-cache"))
    previous = os.environ.get("SEMROUTE_CACHE")
    os.environ["SEMROUTE_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("SEMROUTE_CACHE", None)
    else:
        os.environ["SEMROUTE_CACHE"] = previous


@pytest.fixture(scope="session")
def bundled_index(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled example routes built with the real default model."""
    from semroute.tuning.build import build_index

    out = tmp_path_factory.mktemp("bundled") / "default"
    build_index(ROOT / "routes", out)
    return out


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 (see semroute.testing.fake_provider)."""
    with FakeProvider(hang_seconds=5) as running:
        yield running


@pytest.fixture
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """FakeProvider's key in the environment its deployments name, and no $SEMROUTE_LOG."""
    from tests.provider_kit import KEY, KEY_ENV

    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("SEMROUTE_LOG", raising=False)
