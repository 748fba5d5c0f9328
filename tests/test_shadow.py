"""Shadow evaluation over real HTTP: sampled requests also go to a reference model, in the
background, and a judge compares the answers."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from semroute.dispatch.shadow import sampled
from semroute.testing import FakeProvider
from tests.provider_kit import PRICED, run
from tests.quality_kit import CHAT, EXTRACT, build, lines, spec, wait_for

pytestmark = pytest.mark.usefixtures("provider_key")


def billed(body: dict[str, Any], answer: str) -> float:
    """What answering ``body`` with ``answer`` costs at the test prices ($1 and $2 per million
    tokens), the tokens counted as the FakeProvider counts them: words."""
    prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    completion = len(answer.split())
    return prompt * PRICED["input_cost_per_token"] + completion * PRICED["output_cost_per_token"]


def shadowed(provider: FakeProvider, folder: Path, sample: float = 1.0, **shadow: Any) -> Any:
    settings = {"sample": sample, "reference": "reference", "judge": "judge", **shadow}
    return build(folder, spec(provider, folder, router={"shadow": settings}))


def test_the_answer_returns_before_the_reference_model_answers(
    tmp_path: Path, provider: FakeProvider
) -> None:
    gate = threading.Event()
    provider.answer("reference", "the reference answer", gate=gate)
    provider.script("judge", ["A", "B"])
    router, dispatcher = shadowed(provider, tmp_path)
    result = dispatcher.complete(CHAT, router=router)
    # The answer is here while its shadow job is still waiting for the reference model (held
    # back until the gate opens below): the job is in flight and has written nothing yet.
    assert result.text == "Hello from frontier."
    assert not dispatcher.wait_for_shadows(timeout=0.2)
    assert lines(tmp_path, "quality") == []
    wait_for(lambda: provider.hits("reference") == 1, "the shadow request to arrive")
    assert not dispatcher.wait_for_shadows(timeout=0)
    assert len(lines(tmp_path)) == 1  # the request's own line is already written
    gate.set()
    assert dispatcher.wait_for_shadows(timeout=20)
    (record,) = lines(tmp_path, "quality")
    assert record["request_id"] == result.request_id
    assert (record["status"], record["verdict"]) == ("judged", "win")
    assert record["verdicts"] == ["first", "second"]
    assert (record["model"], record["reference"], record["judge"]) == (
        "frontier",
        "reference",
        "judge",
    )
    # Each call's cost is its tokens (the FakeProvider's usage: words) times the price.
    reference = next(r for r in provider.requests if r.model == "reference")
    judged = [r for r in provider.requests if r.model == "judge"]
    assert record["reference_cost_usd"] == pytest.approx(
        billed(reference.body, "the reference answer"), rel=1e-9
    )
    assert record["judge_cost_usd"] == pytest.approx(
        billed(judged[0].body, "A") + billed(judged[1].body, "B"), rel=1e-9
    )
    assert record["cost_usd"] == pytest.approx(
        record["reference_cost_usd"] + record["judge_cost_usd"]
    )
    assert dispatcher.shadow.spent_today() == pytest.approx(record["cost_usd"])
    # The decision log still holds one decision line per request.
    assert len(lines(tmp_path)) == 1


@pytest.mark.parametrize(
    ("said", "verdict"),
    [
        (["A", "B"], "win"),  # the answer preferred in both orders
        (["B", "A"], "loss"),  # the reference preferred in both orders
        (["A", "A"], "tie"),  # whatever comes first wins: position bias, a tie
        (["TIE", "tie"], "tie"),
        (["A", "TIE"], "win"),
    ],
)
def test_the_judge_sees_both_orders(
    tmp_path: Path, provider: FakeProvider, said: list[str], verdict: str
) -> None:
    provider.answer("reference", "the reference answer")
    provider.script("judge", said)
    router, dispatcher = shadowed(provider, tmp_path)
    dispatcher.complete(CHAT, router=router)
    assert dispatcher.wait_for_shadows(timeout=20)
    (record,) = lines(tmp_path, "quality")
    assert record["verdict"] == verdict
    first, second = (r for r in provider.requests if r.model == "judge")
    # The answer is shown as A first, then as B.
    assert first.body["messages"][-1]["content"].index("Hello from frontier.") < first.body[
        "messages"
    ][-1]["content"].index("the reference answer")
    assert second.body["messages"][-1]["content"].index("the reference answer") < second.body[
        "messages"
    ][-1]["content"].index("Hello from frontier.")


@pytest.mark.parametrize("problem", ["judge_garbage", "judge_error", "reference_error"])
def test_a_failing_shadow_is_recorded_and_never_touches_the_answer(
    tmp_path: Path, provider: FakeProvider, problem: str
) -> None:
    if problem == "judge_garbage":
        provider.answer("judge", "Answer A is somewhat better, I think.")
    elif problem == "judge_error":
        provider.error("judge", status=500)
    else:
        provider.error("reference", status=503)
    router, dispatcher = shadowed(provider, tmp_path)
    result = dispatcher.complete(CHAT, router=router)
    assert result.text == "Hello from frontier."
    assert dispatcher.wait_for_shadows(timeout=20)
    (record,) = lines(tmp_path, "quality")
    assert (record["status"], record["verdict"]) == ("failed", None)
    assert record["detail"].startswith(
        "reference" if problem == "reference_error" else "judge_error"
    )
    (line,) = lines(tmp_path)
    assert line["error"] is None


def test_the_cost_cap_drops_shadow_jobs(tmp_path: Path, provider: FakeProvider) -> None:
    provider.script("judge", ["A", "B"])
    router, dispatcher = shadowed(provider, tmp_path, max_cost_usd_per_day=1e-9)
    for _ in range(3):
        dispatcher.complete(CHAT, router=router)
        assert dispatcher.wait_for_shadows(timeout=20)
    records = lines(tmp_path, "quality")
    # The first job runs (nothing spent yet) and spends past the cap; the others are dropped.
    assert [(r["status"], r["detail"]) for r in records] == [
        ("judged", None),
        ("dropped", "cost_cap"),
        ("dropped", "cost_cap"),
    ]
    assert provider.hits("reference") == 1
    assert dispatcher.shadow.counts["dropped_cost_cap"] == 2
    assert dispatcher.shadow.spent_today() > 1e-9


def test_a_full_queue_drops_shadow_jobs(tmp_path: Path, provider: FakeProvider) -> None:
    gate = threading.Event()
    provider.answer("reference", "late", gate=gate)
    provider.answer("judge", "TIE")
    router, dispatcher = shadowed(provider, tmp_path, max_concurrent=1, max_queued=0)
    first = dispatcher.complete(CHAT, router=router)
    wait_for(lambda: provider.hits("reference") == 1, "the first shadow job to start")
    second = dispatcher.complete(CHAT, router=router)  # answered; its shadow job is dropped
    assert second.text == "Hello from frontier."
    (dropped,) = lines(tmp_path, "quality")
    assert (dropped["request_id"], dropped["status"], dropped["detail"]) == (
        second.request_id,
        "dropped",
        "queue_full",
    )
    gate.set()
    assert dispatcher.wait_for_shadows(timeout=20)
    judged = [r for r in lines(tmp_path, "quality") if r["status"] == "judged"]
    assert [r["request_id"] for r in judged] == [first.request_id]


def test_sampling_is_a_hash_of_the_request_id() -> None:
    ids = [uuid.UUID(int=i).hex for i in range(20_000)]
    share = sum(sampled(i, 0.05) for i in ids) / len(ids)
    assert 0.04 < share < 0.06
    assert all(sampled(i, 1.0) for i in ids[:100]) and not any(sampled(i, 0.0) for i in ids[:100])
    assert [sampled(i, 0.3) for i in ids[:500]] == [sampled(i, 0.3) for i in ids[:500]]


def test_the_sampled_share_of_requests_is_shadowed(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("judge", "TIE")
    router, dispatcher = shadowed(provider, tmp_path, sample=0.5)
    for _ in range(12):
        dispatcher.complete(CHAT, router=router)
    assert dispatcher.wait_for_shadows(timeout=30)
    requested = [line["request_id"] for line in lines(tmp_path)]
    expected = {r for r in requested if sampled(r, 0.5)}
    assert {r["request_id"] for r in lines(tmp_path, "quality")} == expected
    assert provider.hits("reference") == len(expected)


def test_a_route_overrides_the_routers_shadow(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("judge", "TIE")
    data = spec(
        provider,
        tmp_path,
        router={"shadow": {"sample": 1.0, "reference": "reference", "judge": "judge"}},
        extract={"shadow": {"sample": 0.0}},
        chat={"shadow": {"reference": "strong"}},
    )
    router, dispatcher = build(tmp_path, data)
    dispatcher.complete(EXTRACT, router=router)
    chat = dispatcher.complete(CHAT, router=router)
    dispatcher.complete("hi", model="frontier")  # pinned: never shadowed
    assert dispatcher.wait_for_shadows(timeout=20)
    (record,) = lines(tmp_path, "quality")
    assert (record["request_id"], record["route"], record["reference"]) == (
        chat.request_id,
        "chat",
        "strong",
    )
    assert provider.hits("reference") == 0


def test_a_stream_is_shadowed_once_it_has_ended(tmp_path: Path, provider: FakeProvider) -> None:
    provider.script("judge", ["B", "A"])
    router, dispatcher = shadowed(provider, tmp_path)
    stream = dispatcher.complete(CHAT, router=router, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "Hello from frontier."
    assert dispatcher.wait_for_shadows(timeout=20)
    (record,) = lines(tmp_path, "quality")
    assert (record["request_id"], record["verdict"]) == (stream.request_id, "loss")
    reference = next(r for r in provider.requests if r.model == "reference")
    assert reference.stream is False


def test_a_stream_closed_midway_is_not_shadowed(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("frontier", "a long answer of many words")
    provider.answer("judge", "TIE")
    router, dispatcher = shadowed(provider, tmp_path)
    with dispatcher.complete(CHAT, router=router, stream=True) as stream:
        next(iter(stream))
    assert dispatcher.wait_for_shadows(timeout=20)
    assert len(lines(tmp_path)) == 1 and lines(tmp_path, "quality") == []
    assert provider.hits("reference") == 0


def test_an_async_request_is_shadowed_off_the_callers_loop(
    tmp_path: Path, provider: FakeProvider
) -> None:
    gate = threading.Event()
    provider.answer("reference", "the reference answer", gate=gate)
    provider.answer("judge", "TIE")
    router, dispatcher = shadowed(provider, tmp_path)

    async def main() -> Any:
        result = await dispatcher.acomplete(CHAT, router=router)
        # Answered on this loop while the shadow job still waits for the reference model.
        assert lines(tmp_path, "quality") == []
        assert not await asyncio.to_thread(dispatcher.wait_for_shadows, 0.2)
        gate.set()
        assert await asyncio.to_thread(dispatcher.wait_for_shadows, 20)
        return result

    result = run(main())
    (record,) = lines(tmp_path, "quality")
    assert (record["request_id"], record["status"]) == (result.request_id, "judged"), record


def test_the_reference_gets_the_same_request(tmp_path: Path, provider: FakeProvider) -> None:
    provider.answer("judge", "TIE")
    router, dispatcher = shadowed(provider, tmp_path)
    dispatcher.complete(CHAT, router=router, max_tokens=50, temperature=0.3, metadata={"team": "a"})
    assert dispatcher.wait_for_shadows(timeout=20)
    answer, reference = (r for r in provider.requests if r.model in ("frontier", "reference"))
    assert reference.body["messages"] == answer.body["messages"]
    assert (reference.body["max_tokens"], reference.body["temperature"]) == (50, 0.3)
    assert reference.stream is False


def test_a_shadow_model_without_a_price_is_a_warning() -> None:
    from semroute.config.routes import parse_routes

    data = {
        "router": {
            "default_model": "frontier",
            "shadow": {"sample": 0.1, "reference": "house-model", "judge": "house-model"},
        },
        "models": [
            {"model_name": n, "litellm_params": {"model": f"openai/{n}"}}
            for n in ("frontier", "house-model")
        ],
        "routes": [{"name": "a", "utterances": ["hello"]}],
    }
    (warning,) = parse_routes(data, source="routes.yaml").warnings
    assert "'house-model' has no known price" in warning and "cost cap" in warning


# --- through the gateway -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_the_gateway_answers_without_waiting_for_the_shadow(
    tmp_path: Path, provider: FakeProvider, stream: bool
) -> None:
    import time

    import openai

    from tests.gateway_kit import Served

    provider.answer("reference", "the reference answer", delay=3.0)
    provider.answer("judge", "TIE")
    shadow = {"sample": 1.0, "reference": "reference", "judge": "judge"}
    # `extract` is never shadowed: a request there warms the gateway up first.
    data = spec(provider, tmp_path, router={"shadow": shadow}, extract={"shadow": {"sample": 0.0}})
    build(tmp_path, data)
    with (
        Served(tmp_path / "index") as served,
        openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": EXTRACT}]
        )
        started = time.monotonic()
        if stream:
            chunks = client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": CHAT}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks)
        else:
            answer = client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": CHAT}]
            )
            text = answer.choices[0].message.content or ""
        elapsed = time.monotonic() - started
        # The reference model takes 3 s to answer; the client has its whole answer long before.
        assert text == "Hello from frontier."
        assert elapsed < 1.5, f"the answer took {elapsed:.2f} s"
        assert lines(tmp_path, "quality") == []
        wait_for(lambda: len(lines(tmp_path, "quality")) == 1, "the quality record")
    (record,) = lines(tmp_path, "quality")
    (_, line) = lines(tmp_path)
    assert (record["request_id"], record["status"], record["verdict"]) == (
        line["request_id"],
        "judged",
        "tie",
    )
    assert provider.hits("reference") == 1
