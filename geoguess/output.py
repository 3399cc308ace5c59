"""Showing results: rich tables on a terminal, plain text when piped, JSON for scripts.

Data goes to stdout; messages and progress go to stderr. rich honours ``NO_COLOR``
and turns colour off by itself when a stream is not a terminal.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from .errors import one_line

if TYPE_CHECKING:
    from rich.console import Console

    from .locate import LocateResult


def stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    from rich.console import Console

    # soft_wrap: one-line messages stay one line however narrow the (non-)terminal is.
    return Console(stderr=True, highlight=False, soft_wrap=True)


def json_line(obj: Any, *, ascii_only: bool = False) -> str:
    return json.dumps(obj, ensure_ascii=ascii_only, allow_nan=False)


def can_hold_unicode(stream: Any) -> bool:
    """Whether a text stream's encoding can hold any text (UTF-8 and its kin)."""
    import codecs

    try:
        name = codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name
    except LookupError:
        return False
    return name.startswith("utf")


def print_json(obj: Any) -> None:
    """One JSON line to stdout, always valid JSON: non-ASCII text is escaped (\\u014d)
    when stdout cannot hold it (cp1252 when redirected on Windows, PYTHONIOENCODING=ascii).
    """
    sys.stdout.write(json_line(obj, ascii_only=not can_hold_unicode(sys.stdout)) + "\n")


def tolerate_any_text(*streams: Any) -> None:
    """Make text that a stream's encoding cannot hold come out escaped, never raise.

    Place names (Shibakōen) reach tables and messages; a stdout in cp1252 or ASCII must
    degrade them, not crash with a traceback.
    """
    for stream in streams:
        if not can_hold_unicode(stream) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def print_table(
    console: Console,
    columns: list[str],
    rows: list[list[str]],
    *,
    title: str | None = None,
    right: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    """A rich table on a terminal; tab-separated lines (header first) when piped."""
    if not console.is_terminal:
        if title:
            sys.stdout.write(f"# {title}\n")
        for line in [columns, *rows]:
            sys.stdout.write("\t".join(line) + "\n")
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None, title_justify="left", header_style="bold")
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    for row in rows:
        table.add_row(*(escape(c) for c in row))
    console.print(table)


def _place_text(place: Any) -> str:
    from .places import describe

    return describe(place) if place else ""


def _fmt_km(km: float) -> str:
    if km < 10:
        return f"{km:.1f}"
    return f"{km:,.0f}"


def spread_text(result: LocateResult) -> str:
    if not result.spread_km:
        return ""
    parts = [f"{int(q * 100)}% within {_fmt_km(r)} km" for q, r in sorted(result.spread_km.items())]
    text = "Spread of the probability around the best guess: " + ", ".join(parts)
    if result.confidence is not None:
        text += f"\nConfidence: {result.confidence} level (where half the probability lies)"
    return text


def areas_text(result: LocateResult) -> list[str]:
    """Where the probability lies, by country and by region (empty without areas)."""
    from .areas import format_shares

    lines = []
    if result.countries:
        lines.append("By country: " + format_shares(result.countries))
    if result.regions:
        lines.append("By region: " + format_shares(result.regions, sep="; "))
    return lines


def candidate_place(candidate: Any) -> str:
    """A candidate's place in words: a custom gallery's own point name first."""
    place = _place_text(candidate.place)
    if candidate.label:
        return f"{candidate.label} ({place})" if place else candidate.label
    return place


def exif_text(result: LocateResult) -> list[str]:
    lines = []
    md = result.metadata
    gps = result.exif_gps
    if gps is not None:
        where = f" ({_place_text(result.exif_place)})" if result.exif_place else ""
        line = f"EXIF GPS: {gps[0]:.5f}, {gps[1]:.5f}{where}"
        err = result.exif_error_km
        if err is not None:
            line += f"; best guess is {_fmt_km(err)} km away"
        lines.append(line)
    elif md is not None and md.gps_status in {"invalid", "placeholder"}:
        lines.append(f"EXIF GPS ignored: {md.gps_problem or md.gps_status}")
    if md is not None and (md.taken_at or md.camera):
        bits = [b for b in (md.taken_at and f"taken {md.taken_at}", md.camera) if b]
        lines.append("; ".join(bits))
    return lines


def render_plain(result: LocateResult) -> str:
    """Tab-separated candidates and plain notes, for pipes and files."""
    out = [f"# {result.file}"]
    if result.error:
        out.append(f"error\t{result.error}")
        return "\n".join(out)
    out.append("rank\tlat\tlon\tplace\tprobability\tkm_from_best")
    for i, c in enumerate(result.candidates, 1):
        p = c.prediction
        out.append(
            f"{i}\t{p.lat:.5f}\t{p.lon:.5f}\t{candidate_place(c)}\t{p.probability:.4f}\t"
            f"{c.distance_from_best_km:.1f}"
        )
    for text in [spread_text(result), *areas_text(result), *exif_text(result)]:
        out.extend(f"# {line}" for line in text.splitlines())
    return "\n".join(out)


def render_table(console: Console, result: LocateResult) -> None:
    from rich.markup import escape
    from rich.table import Table

    if result.error:
        console.print(f"[bold]{escape(result.file)}[/]: [red]{escape(result.error)}[/]")
        return
    table = Table(title=escape(result.file), title_justify="left", header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("lat", justify="right")
    table.add_column("lon", justify="right")
    table.add_column("place")
    table.add_column("probability", justify="right")
    table.add_column("km from best", justify="right")
    for i, c in enumerate(result.candidates, 1):
        p = c.prediction
        table.add_row(
            str(i),
            f"{p.lat:.5f}",
            f"{p.lon:.5f}",
            escape(candidate_place(c)),
            f"{p.probability:.2%}",
            _fmt_km(c.distance_from_best_km),
        )
    console.print(table)
    for line in [spread_text(result), *areas_text(result), *exif_text(result)]:
        if line:
            console.print(escape(line), style="dim" if line.startswith("taken") else None)


def show_result(result: LocateResult, console: Console | None = None) -> None:
    console = console or stdout_console()
    if console.is_terminal:
        render_table(console, result)
    else:
        sys.stdout.write(render_plain(result) + "\n")


# --- LLM refinement (geoguess.llm) ------------------------------------------------------


def usage_text(usage: Any) -> str:
    """One line: requests, cache hits, tokens and cost of LLM calls."""
    cost = "cost unknown" if usage.cost_usd is None else f"${usage.cost_usd:.4f}"
    if usage.requests == 0 and usage.cached and usage.cost_usd is not None:
        cost = "no cost"
    failed = f", {usage.failed_requests} failed attempts" if usage.failed_requests else ""
    return (
        f"LLM usage: {usage.requests} requests, {usage.cached} prompts from cache{failed}, "
        f"{usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} completion tokens, {cost}"
    )


def refinement_summary(refinement: Any) -> list[str]:
    """The refined answer and where it came from, as lines of text."""
    best = refinement.best
    if best is None:
        return [f"LLM refinement ({refinement.model}): no answer ({refinement.error})"]
    where = _place_text(best.place)
    lines = [
        f"LLM refinement ({refinement.model}): {best.lat:.5f}, {best.lon:.5f}"
        + (f" ({where})" if where else "")
    ]
    detail = f"from {best.source_label}; score {best.score:.4f}"
    if best.source == "llm":
        detail += f"; {_fmt_km(best.distance_from_retrieval_km)} km from GeoCLIP's answer"
    lines.append(detail)
    if best.reason:
        lines.append(f"reason: {best.reason}")
    if refinement.fallback:
        lines.append("fallback: no usable answer from the model, GeoCLIP's answer stands")
    return lines


def refinement_notes(refinement: Any) -> list[str]:
    """Rejected answers, warnings and usage, as lines of text."""
    lines = [
        f"rejected: {r.prompt.label}, sample {r.sample}: {r.problem}" for r in refinement.rejected
    ]
    lines += [f"warning: {w}" for w in refinement.warnings]
    if refinement.error:
        lines.append(f"error: {refinement.error}")
    lines.append(usage_text(refinement.usage))
    return lines


def render_refinement_plain(refinement: Any) -> str:
    """The refined answer and every candidate, tab-separated, for pipes and files."""
    out = [f"# {line}" for line in refinement_summary(refinement)]
    out.append("llm_rank\tsource\tlat\tlon\tplace\tscore\tkm_from_geoclip\tmodel_place\treason")
    for i, c in enumerate(refinement.candidates, 1):
        out.append(
            f"{i}\t{c.source_label}\t{c.lat:.5f}\t{c.lon:.5f}\t{_place_text(c.place)}\t"
            f"{c.score:.4f}\t{c.distance_from_retrieval_km:.1f}\t{one_line(c.model_place)}\t"
            f"{one_line(c.reason)}"
        )
    out += [f"# {line}" for line in refinement_notes(refinement)]
    return "\n".join(out)


def render_refinement(console: Console, refinement: Any) -> None:
    """The refined answer and a table of every verified candidate."""
    from rich.markup import escape
    from rich.table import Table

    summary = refinement_summary(refinement)
    console.print(f"[bold]{escape(summary[0])}[/]")
    for line in summary[1:]:
        console.print(escape(line))
    if refinement.candidates:
        table = Table(header_style="bold")
        table.add_column("#", justify="right")
        table.add_column("source")
        table.add_column("lat", justify="right")
        table.add_column("lon", justify="right")
        table.add_column("place")
        table.add_column("score", justify="right")
        table.add_column("km from GeoCLIP", justify="right")
        table.add_column("reason", overflow="fold")
        for i, c in enumerate(refinement.candidates, 1):
            table.add_row(
                str(i),
                escape(c.source_label),
                f"{c.lat:.5f}",
                f"{c.lon:.5f}",
                escape(candidate_place(c)),
                f"{c.score:.4f}",
                _fmt_km(c.distance_from_retrieval_km),
                escape(one_line(c.reason)),
            )
        console.print(table)
    for line in refinement_notes(refinement):
        style = "yellow" if line.startswith(("warning", "error", "rejected")) else "dim"
        console.print(escape(line), style=style)


def show_refinement(refinement: Any, console: Console | None = None) -> None:
    console = console or stdout_console()
    if console.is_terminal:
        render_refinement(console, refinement)
    else:
        sys.stdout.write(render_refinement_plain(refinement) + "\n")
