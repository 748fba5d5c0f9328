"""Outcome data: how well a weak and a strong model answered each prompt, as JSON lines.

    {"prompt": "Find the index of <p> in S_5 ...", "weak": 0, "strong": 1}

``weak`` / ``strong`` are 1/0 correctness or a judge score in [0, 1] (the format shadow
evaluation produces). Other keys are kept aside: ``domain``, when every row has one, lets
training learn a per-domain prior. Every row is checked; a problem is one
:class:`~semroute.errors.DataError` naming the file, the line and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import semroute.text as text
from semroute.errors import DataError
from semroute.tuning.jsonl import read_jsonl

__all__ = ["Outcomes", "load_outcomes"]

MAX_ROWS = 1_000_000
"""More rows than any outcome file needs; a bigger one is refused rather than read whole."""


@dataclass(frozen=True)
class Outcomes:
    """Rows of outcome data: the prompts and each model's quality on them."""

    prompts: list[str]
    weak: npt.NDArray[np.float64]
    strong: npt.NDArray[np.float64]
    source: str
    domains: list[str] | None = None
    """Each row's ``domain`` when every row gives one as text (else None)."""

    def __len__(self) -> int:
        return len(self.prompts)

    def check_gap(self) -> None:
        """Refuse rows where the strong model is not better overall: nothing to learn or recover."""
        if float((self.strong - self.weak).mean()) <= 0:
            raise DataError(
                f"the strong model is not better than the weak one on these rows (mean quality "
                f"{self.strong.mean():.3f} vs {self.weak.mean():.3f}); check that the "
                '"weak" and "strong" fields are not swapped',
                file=self.source,
            )


def load_outcomes(path: str | Path) -> Outcomes:
    """Read and check a JSON-lines file of ``{"prompt", "weak", "strong"}`` rows."""
    p = Path(path)
    prompts: list[str] = []
    weak: list[float] = []
    strong: list[float] = []
    domains: list[Any] = []
    for number, value in read_jsonl(p, '{"prompt", "weak", "strong"}'):
        if len(prompts) >= MAX_ROWS:
            raise DataError(f"holds more than {MAX_ROWS:,} rows; split it", file=p, line=number)
        row = _row(value, p, number)
        prompts.append(text.clean(row["prompt"]))
        weak.append(_quality(row, "weak", p, number))
        strong.append(_quality(row, "strong", p, number))
        domains.append(row.get("domain"))
    if not prompts:
        raise DataError(
            'holds no rows; write one {"prompt", "weak", "strong"} object a line', file=p
        )
    known = all(isinstance(d, str) and d for d in domains)
    return Outcomes(
        prompts,
        np.array(weak, dtype=np.float64),
        np.array(strong, dtype=np.float64),
        str(p),
        [str(d) for d in domains] if known else None,
    )


def _row(row: Any, p: Path, number: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(
            f'expected an object {{"prompt", "weak", "strong"}}, got {type(row).__name__}',
            file=p,
            line=number,
        )
    prompt = row.get("prompt")
    if "prompt" not in row:
        raise DataError("field 'prompt' is missing", file=p, line=number)
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(
            f"field 'prompt' should be non-empty text (got {_short(prompt)})", file=p, line=number
        )
    return row


def _quality(row: dict[str, Any], field: str, p: Path, number: int) -> float:
    if field not in row:
        raise DataError(f"field {field!r} is missing", file=p, line=number)
    value = row[field]
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value <= 1:
        raise DataError(
            f"field {field!r} should be 1/0 correctness or a score from 0 to 1 "
            f"(got {_short(value)})",
            file=p,
            line=number,
        )
    return float(value)


def _short(value: object) -> str:
    shown = repr(value)
    return text.printable(shown if len(shown) <= 40 else shown[:37] + "...")
