"""A key's daily budget counts what its requests really cost: answers, streams, cascades (their
judge included). Each budget here is 2.5 requests' worth at the test prices, worked out from
the tokens the FakeProvider reports, so charging too much, too little or nothing shows: spend
0, 1 and 2 requests' worth is under it (answered), 3 requests' worth is not (402)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from semroute.dispatch.judge import acceptance_messages
from semroute.testing import FakeEncoder, FakeProvider
from semroute.tuning.build import build_index
from tests.gateway_kit import Served, build, log_lines
from tests.provider_kit import PRICED
from tests.quality_kit import CHEAP, EXTRACT, spec, wait_for

pytestmark = pytest.mark.usefixtures("provider_key")

KEY = "sk-budget-5e1a9c7f3b20"
ANSWER = "Hello from frontier."
SAY_HELLO = [{"role": "user", "content": "hello there"}]


def words(text: str) -> int:
    """Tokens as the FakeProvider counts them: words."""
    return len(text.split())


def cost(request: dict[str, Any], answer: str, price: dict[str, float]) -> float:
    """What answering ``request`` with ``answer`` costs at ``price``, from the FakeProvider's
    usage (prompt tokens: the words of every message; completion tokens: the answer's)."""
    prompt = sum(words(str(m.get("content", ""))) for m in request["messages"])
    return prompt * price["input_cost_per_token"] + words(answer) * price["output_cost_per_token"]


# One answer from `frontier` to "hello there": 2 prompt and 3 completion tokens, $0.000008.
HELLO_COST = cost({"messages": SAY_HELLO}, ANSWER, PRICED)


def keyed(budget: float) -> dict[str, Any]:
    return {"keys": [{"key": "os.environ/BUDGET_KEY", "budget_usd_per_day": budget}]}


@pytest.fixture
def budget_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGET_KEY", KEY)


@pytest.fixture
def served(tmp_path: Path, provider: FakeProvider, budget_key: None) -> Iterator[Served]:
    provider.answer("frontier", ANSWER)
    with Served(build(tmp_path, provider, server=keyed(2.5 * HELLO_COST))) as running:
        yield running


def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)


def answered(served: Served) -> float:
    """Chat requests the gateway has finished with a 200 (counted after the key is charged)."""
    text = httpx.get(served.url + "/metrics").text
    found = re.findall(r"^semroute_requests_total\{(.*)\} (\S+)$", text, re.MULTILINE)
    return sum(
        float(value)
        for labels, value in found
        if 'endpoint="chat"' in labels and 'status="200"' in labels
    )


def refused_spend(served: Served, messages: list[dict[str, Any]], **kw: Any) -> float:
    """Ask once more, expecting 402; the spend the refusal reports."""
    with client(served) as c, pytest.raises(openai.APIStatusError) as caught:
        c.chat.completions.create(model="auto", messages=messages, **kw)  # type: ignore[call-overload]
    assert caught.value.status_code == 402
    error: dict[str, Any] = caught.value.body  # type: ignore[assignment]
    assert error["code"] == "over_daily_budget"
    found = re.search(r"has spent \$(\S+) today", error["message"])
    assert found is not None, error["message"]
    return float(found.group(1))


def test_the_budget_holds_two_and_a_half_answers(
    served: Served, provider: FakeProvider, tmp_path: Path
) -> None:
    with client(served) as c:
        for _ in range(3):  # spent 0, 1 and 2 answers' worth: under the budget
            raw = c.chat.completions.with_raw_response.create(model="auto", messages=SAY_HELLO)
            assert raw.parse().choices[0].message.content == ANSWER
            assert float(raw.headers["x-semroute-cost-usd"]) == pytest.approx(HELLO_COST)
    # 3 answers' worth is over it: the fourth is refused and calls no model.
    assert refused_spend(served, SAY_HELLO) == pytest.approx(3 * HELLO_COST, rel=1e-5)
    assert provider.hits("frontier") == 3
    assert [line["cost_usd"] for line in log_lines(tmp_path)] == pytest.approx([HELLO_COST] * 3)


def test_a_streamed_answer_is_charged_too(served: Served, provider: FakeProvider) -> None:
    with client(served) as c:
        for n in range(1, 4):
            stream = c.chat.completions.create(model="auto", messages=SAY_HELLO, stream=True)
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
            assert text == ANSWER
            # The key is charged once the stream has ended, just after its last byte.
            wait_for(lambda n=n: answered(served) == n, f"stream {n} to be counted")
    assert refused_spend(served, SAY_HELLO, stream=True) == pytest.approx(3 * HELLO_COST, rel=1e-5)
    assert provider.hits("frontier") == 3


# --- a cascade whose judge accepts the cheap answer: the key pays for both calls ----------------

CHEAP_ANSWER = '{"total": 12}'
EXTRACTING = [{"role": "user", "content": EXTRACT}]


# The judge is shown the request and the cheap answer; its prompt is far longer than either.
JUDGE_PROMPT = {"messages": acceptance_messages(EXTRACTING, CHEAP_ANSWER)}
CASCADE_COST = cost({"messages": EXTRACTING}, CHEAP_ANSWER, CHEAP) + cost(
    JUDGE_PROMPT, "ACCEPT", PRICED
)


def test_a_cascades_judge_is_charged_to_the_key(
    tmp_path: Path, provider: FakeProvider, budget_key: None
) -> None:
    provider.answer("cheap", CHEAP_ANSWER)
    provider.answer("judge", "ACCEPT")
    cascade = {"cascade": ["cheap", "strong"], "accept": {"judge": "judge"}}
    data = spec(provider, tmp_path, extract=cascade)
    with gateway(tmp_path, data, budget=2.5 * CASCADE_COST) as served, client(served) as c:
        for _ in range(3):
            raw = c.chat.completions.with_raw_response.create(model="auto", messages=EXTRACTING)
            assert raw.parse().choices[0].message.content == CHEAP_ANSWER
            assert raw.headers["x-semroute-model"] == "cheap"
            assert float(raw.headers["x-semroute-cost-usd"]) == pytest.approx(CASCADE_COST)
        assert refused_spend(served, EXTRACTING) == pytest.approx(3 * CASCADE_COST, rel=1e-5)
    assert (provider.hits("cheap"), provider.hits("judge"), provider.hits("strong")) == (3, 3, 0)
    # What the FakeProvider was sent is what the cost was worked out from.
    judge = next(r for r in provider.requests if r.model == "judge")
    assert judge.body["messages"] == JUDGE_PROMPT["messages"]


def gateway(folder: Path, data: dict[str, Any], budget: float) -> Served:
    """A gateway over ``data``'s routes whose one key has a daily ``budget``."""
    routes = folder / "routes"
    routes.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({**data, "server": keyed(budget)}, sort_keys=False)
    (routes / "routes.yaml").write_text(text)
    build_index(routes, folder / "index", encoder=FakeEncoder())
    return Served(folder / "index")
