from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import semroute


def test_exported_members() -> None:
    """Everything in __all__ exists, and every public name is in __all__ (httpx's pattern)."""
    names = {name for name in dir(semroute) if not name.startswith("_")}
    assert names == set(semroute.__all__) - {"__version__"}
    for name in semroute.__all__:
        assert getattr(semroute, name) is not None


def test_import_loads_no_heavy_dependency() -> None:
    code = (
        "import json, sys, semroute; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'litellm', 'sentence_transformers', 'transformers', 'onnxruntime', 'faiss'})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_version_matches_the_installed_distribution() -> None:
    from importlib.metadata import version

    assert semroute.__version__ == version("semroute")


CONVERSATION = (
    "[{'role': 'user', 'content': 'hello there'}, {'role': 'assistant', 'content': 'hi'}, "
    "{'role': 'user', 'content': 'will it rain'}]"
)


@pytest.mark.parametrize("query", ["'will it rain'", CONVERSATION], ids=["text", "conversation"])
def test_routing_loads_neither_torch_nor_litellm(fake_index, query: str) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import json, os, sys, semroute; "
        f"os.environ['SEMROUTE_INDEX'] = {str(fake_index)!r}; "
        f"d = semroute.route({query}); "
        "semroute.complete, semroute.acomplete, semroute.DispatchResult; "  # no LiteLLM yet
        "print(json.dumps([d.route, sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'litellm', 'openai', 'sentence_transformers', 'transformers'})]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["weather", []]


def test_router_and_dispatcher_are_exported_and_router_load_keeps_the_subclass(
    fake_index,  # type: ignore[no-untyped-def]
) -> None:
    from semroute.routing.router import Router as RoutingRouter

    router = semroute.Router.load(fake_index)
    assert type(router) is semroute.Router and isinstance(router, RoutingRouter)
    dispatcher = semroute.Dispatcher.for_index(router.index)
    assert dispatcher.default_model == router.default_model


def test_the_removed_shims_are_gone() -> None:
    import semroute

    assert not hasattr(semroute.Router, "complete")
    assert not hasattr(semroute.Router, "acomplete")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("semroute.fake_provider")
