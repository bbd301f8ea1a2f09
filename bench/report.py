"""Figures into markdown: medians with their min-max, pairwise ratios,
targets marked MET or MISSED, and the tables of ``results/latest.md``."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median (min-max)``, or the one value when there is only one."""
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Pair-by-pair ratios of two series measured side by side."""
    return [a / b for a, b in zip(num, den, strict=True) if b]


@dataclass
class Target:
    """One target and whether this run met it."""

    workload: str
    what: str
    met: bool
    detail: str = ""

    @property
    def verdict(self) -> str:
        return "MET" if self.met else "MISSED"


@dataclass
class Table:
    """A markdown table with a title and notes under it."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join(" --- " for _ in self.header) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines.append("")
            lines += self.notes
        return "\n".join(lines) + "\n"


def targets_table(targets: list[Target]) -> Table:
    table = Table("Targets", ["workload", "target", "this run", "verdict"])
    for t in targets:
        table.add(t.workload, t.what, t.detail, f"**{t.verdict}**")
    return table
