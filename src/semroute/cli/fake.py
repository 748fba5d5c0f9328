"""``semroute fake-provider``: the test kit's FakeProvider as a local upstream you can start."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from semroute.cli.options import FiniteRange, warn
from semroute.config.server import is_loopback
from semroute.errors import SemrouteError

__all__ = ["fake_provider_cmd"]


@click.command("fake-provider")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=9000, show_default=True, help="0: a free one."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback lets other machines call it.",
)
@click.option(
    "--delay",
    type=FiniteRange(0, 3600),
    default=0.0,
    show_default=True,
    help="Seconds before each answer starts, like a model's time to first token.",
)
@click.option(
    "--fail",
    "failing",
    multiple=True,
    metavar="MODEL",
    help="Answer every request for MODEL with a 500 (repeat for more models).",
)
@click.option(
    "--flaky",
    type=FiniteRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of the other models' requests that fail with a 500, at random (seeded).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --flaky's draws.")
def fake_provider_cmd(
    port: int, host: str, delay: float, failing: tuple[str, ...], flaky: float, seed: int
) -> None:
    """Run a fake OpenAI-compatible provider until Ctrl-C or SIGTERM: every model name answers
    "Hello from <model>." (streamed or not), except those given --fail.

    Point a LiteLLM deployment at it with `model: openai/<any name>` and `api_base` set to the
    URL it prints; it checks no key, but LiteLLM wants one (`api_key: os.environ/VAR`, any value).

    \b
    Examples:
      semroute fake-provider --port 9000
      semroute fake-provider --port 9000 --delay 0.2 --fail gpt-4o --flaky 0.1
    """
    from semroute.testing.fake_provider import ANY_MODEL, FakeProvider

    provider = FakeProvider(seed=seed, host=host, port=port)
    if flaky > 0:
        provider.flaky(ANY_MODEL, flaky, delay=delay)
    else:
        provider.answer(ANY_MODEL, delay=delay)
    for model in failing:
        provider.flaky(model, 1.0, delay=delay)
    try:
        provider.start()
    except OSError as exc:
        raise SemrouteError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "stop what uses that port or pass another --port"
        ) from exc
    if not is_loopback(host):
        warn(f"listening on {host}: other machines can reach this fake provider")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Both signals only set the event, and are caught before the banner says "Ctrl-C to stop":
    # a Ctrl-C that lands between two statements can't escape as click's "Aborted!" (exit 1).
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        _print_banner(provider.url, failing, delay, flaky)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        provider.stop()
    click.echo("fake provider stopped", err=True)


def _print_banner(url: str, failing: tuple[str, ...], delay: float, flaky: float) -> None:
    lines = [
        f"fake provider listening on {url}",
        "point LiteLLM at it (any model name answers; api_key may be any value):",
        "  models:",
        "    - model_name: my-model",
        "      litellm_params:",
        "        model: openai/my-model",
        f"        api_base: {url}",
        "        api_key: os.environ/FAKE_API_KEY",
    ]
    if failing:
        lines.append(f"failing with 500: {', '.join(failing)}")
    if flaky > 0:
        lines.append(f"failing with 500 at random: {flaky:.0%} of the other models' requests")
    if delay > 0:
        lines.append(f"answering {delay:g} s after each request")
    lines.append("Ctrl-C to stop")
    # Flushed: a caller that started this in the background may be waiting for the URL.
    click.echo("\n".join(lines))
