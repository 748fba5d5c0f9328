"""The README's curl examples for the gateway run as written (against a gateway on a free port
instead of 8000), with a key configured so that the `Authorization` header they send counts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from semroute.testing import FakeProvider
from tests.conftest import ROOT
from tests.gateway_kit import Served, build

SECTION = (
    (ROOT / "README.md").read_text().split("## Run it as a gateway", 1)[1].split("\n## ", 1)[0]
)
ADDRESS = "http://127.0.0.1:8000"


def _curl_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", SECTION, flags=re.DOTALL)
    text = "\n".join(b for b in blocks if "curl " in b).replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip().startswith("curl ")]


def test_the_readme_has_curl_examples() -> None:
    assert len(_curl_commands()) >= 5


@pytest.mark.usefixtures("provider_key")
def test_the_readme_curl_examples_run_as_written(
    tmp_path: Path, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    monkeypatch.setenv("APP_KEY", "sk-readme-5e7a1c")
    index = build(tmp_path, provider, server={"keys": ["os.environ/APP_KEY"]})
    outputs = []
    with Served(index) as served:
        for command in _curl_commands():
            assert ADDRESS in command
            done = subprocess.run(
                ["bash", "-c", command.replace(ADDRESS, served.url)],
                capture_output=True,
                text=True,
                timeout=60,
                env=os.environ,
            )
            assert done.returncode == 0, (command, done.stderr)
            outputs.append(done.stdout)
    answer, stream, route, models, ready, metrics = outputs
    assert json.loads(answer)["choices"][0]["message"]["content"] == "Hello from frontier."
    assert stream.strip().endswith("data: [DONE]")
    assert json.loads(route)["route"] == "weather"
    assert json.loads(models)["data"][0]["id"] == "auto"
    assert json.loads(ready)["status"] == "ready"
    assert "semroute_requests_total" in metrics
