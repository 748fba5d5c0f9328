"""The gateway benchmark's command line: its options, the sizes --smoke or the full run
default to, and the command that reproduces a run. Used by scripts/bench_gateway.py."""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_args(targets: tuple[str, ...], description: str) -> argparse.Namespace:
    """The command line, with the sizes --smoke or the full run default to."""
    parser = argparse.ArgumentParser(description=description)
    # Sizes default to None so that --smoke can tell its own defaults from sizes given.
    parser.add_argument("--requests", type=int, help="non-streamed, per target (5000)")
    parser.add_argument("--streamed", type=int, help="streamed, per target (1000)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.05, help="upstream's answer delay, s")
    parser.add_argument("--workers", type=int, default=1, help="for both servers")
    parser.add_argument("--flaky-requests", type=int, help="per flaky run (1000)")
    parser.add_argument(
        "--sequential",
        type=int,
        help="one at a time, per target: as many non-streamed as streamed (300)",
    )
    parser.add_argument(
        "--mixed",
        type=int,
        help="alternately non-streamed and streamed, --concurrency at a time, per target (1000)",
    )
    parser.add_argument("--warmup", type=int, help="requests per target first (4 x concurrency)")
    parser.add_argument(
        "--slow-streams", type=int, help="streams of ~100 paced events, per target (256)"
    )
    parser.add_argument(
        "--chunk-delay", type=float, default=0.02, help="s between a slow stream's events"
    )
    parser.add_argument(
        "--long-stream-s", type=float, help="how long a slow stream lasts, s (5; --smoke: 2)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run py-spy on `semroute serve` (in .bench/pyspy-venv) and fold where its "
        "CPU goes into the section",
    )
    parser.add_argument("--profile-sequential", type=int, help="profiled, one at a time (300)")
    parser.add_argument("--profile-requests", type=int, help="profiled, 64 at a time (3000)")
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0,
        help="instead of the comparison: one `semroute serve` at --soak-rps for this long; "
        "writes the gateway_soak section",
    )
    parser.add_argument("--soak-rps", type=float, default=50.0, help="the soak's request rate")
    parser.add_argument(
        "--soak-cap", type=int, default=512, help="the soak's most requests in flight"
    )
    parser.add_argument(
        "--soak-max-sessions",
        type=int,
        default=5000,
        help="the server's conversation.max_sessions in the soak (every soak query starts one)",
    )
    parser.add_argument(
        "--redis-requests",
        type=int,
        help="non-streamed, per target, semroute with and without Redis; a quarter as many "
        "streamed (2000; 0: no Redis run)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds the requests are split into"
    )
    parser.add_argument(
        "--targets",
        default=None,
        help=f"comma-separated, of {','.join(targets)} (default: all; --smoke: direct,semroute)",
    )
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few requests unless sizes are given, to check it runs; writes nowhere",
    )
    args = parser.parse_args()
    sizes = (
        (120, 40, 20, 40, 60, 16, 8, 40, 20, 60)
        if args.smoke
        else (5000, 1000, 300, 1000, 1000, 4 * args.concurrency, 256, 2000, 300, 3000)
    )
    names = (
        "requests",
        "streamed",
        "sequential",
        "mixed",
        "flaky_requests",
        "warmup",
        "slow_streams",
        "redis_requests",
        "profile_sequential",
        "profile_requests",
    )
    for name, size in zip(names, sizes, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, size)
    negative = [n for n in names if getattr(args, n) < 0]
    if negative:
        parser.error(f"--{negative[0].replace('_', '-')}: must be 0 or more")
    core = [n for n in ("requests", "streamed", "sequential", "mixed") if getattr(args, n) < 1]
    if core:
        # Every goal is worked out from these runs (goal (a) times route() over --sequential's
        # queries); the others (slow streams, Redis, the flaky upstream) may be left out with 0.
        parser.error(f"--{core[0]}: must be 1 or more (the goals are worked out from it)")
    if args.concurrency < 1 or args.rounds < 1 or args.workers < 1:
        parser.error("--concurrency, --rounds and --workers: must be 1 or more")
    if args.long_stream_s is None:
        args.long_stream_s = 2.0 if args.smoke else 5.0
    wanted = args.targets or ("direct,semroute" if args.smoke else ",".join(targets))
    args.targets = [t for t in targets if t in wanted.split(",") or t == "direct"]
    unknown = set(wanted.split(",")) - set(targets)
    if unknown:
        parser.error(f"--targets: unknown {sorted(unknown)}; choose from {', '.join(targets)}")
    if args.workers != 1 and "semroute-w2" in args.targets:
        # semroute-w2 is measured against one worker; with other --workers it means nothing.
        args.targets.remove("semroute-w2")
    for name in ("long_stream_s", "chunk_delay", "soak_rps"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')}: must be more than 0")
    if args.soak_minutes < 0 or args.soak_cap < 1 or args.soak_max_sessions < 1:
        parser.error(
            "--soak-minutes must be 0 or more, --soak-cap and --soak-max-sessions 1 or more"
        )
    return args


def command_line(args: argparse.Namespace) -> str:
    """The command that runs the comparison again with these sizes."""
    sizes = (
        ("requests", args.requests),
        ("streamed", args.streamed),
        ("sequential", args.sequential),
        ("mixed", args.mixed),
        ("concurrency", args.concurrency),
        ("delay", args.delay),
        ("workers", args.workers),
        ("rounds", args.rounds),
        ("slow-streams", args.slow_streams),
        ("chunk-delay", args.chunk_delay),
        ("long-stream-s", args.long_stream_s),
        ("redis-requests", args.redis_requests),
    )
    command = ".venv/bin/python scripts/bench_gateway.py" + "".join(f" --{k} {v}" for k, v in sizes)
    if args.profile:
        command += f" --profile --profile-sequential {args.profile_sequential}"
        command += f" --profile-requests {args.profile_requests}"
    return command
