"""Every command's human-readable output, in one place: tables on a terminal, plain
tab-separated text when piped.

Commands gather the data and call a ``show_*`` function here, so how a result, a
benchmark, a model set or a gallery looks to a person is decided (and changed) in one
module. Data formats for scripts and files (JSON lines, CSV, GeoJSON, XMP) live
elsewhere; the consoles, JSON lines and the generic table are in :mod:`geoguess.output`.
rich is imported inside the functions that draw, so ``geoguess --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from ..errors import one_line
from ..output import print_table, stdout_console

if TYPE_CHECKING:
    from rich.console import Console

    from ..evaluate import EvalMetrics
    from ..locate import LocateResult
    from ..manifest import Manifest


def megabytes(n: int) -> str:
    """A size in MB: a decimal below 1 MB, where a rounded 0 would hide it."""
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 or n == 0 else f"{n / 1e6:,.1f} MB"


# --- geoguess locate ----------------------------------------------------------------------


def _place_text(place: Any) -> str:
    from ..places import describe

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
    from ..areas import format_shares

    lines = []
    if result.countries:
        lines.append("By country: " + format_shares(result.countries))
    if result.regions:
        lines.append("By region: " + format_shares(result.regions, sep="; "))
    return lines


def candidate_place(candidate: Any) -> str:
    """A candidate's place in words: a custom gallery's own point name first."""
    place = _place_text(candidate.place)
    # Refined candidates (from the LLM) have a place but no gallery label.
    label = getattr(candidate, "label", None)
    if label:
        return f"{label} ({place})" if place else label
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


def _show(item: Any, console: Console | None, draw: Any, plain: Any) -> None:
    """``draw`` it on a terminal, else write its ``plain`` text (piped output)."""
    console = console or stdout_console()
    if console.is_terminal:
        draw(console, item)
    else:
        sys.stdout.write(plain(item) + "\n")


def show_result(result: LocateResult, console: Console | None = None) -> None:
    _show(result, console, render_table, render_plain)


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
    _show(refinement, console, render_refinement, render_refinement_plain)


# --- geoguess eval ------------------------------------------------------------------------


def _convention(metrics: EvalMetrics) -> str:
    who = "G3's convention" if metrics.strict_less else "GeoCLIP's convention"
    return (
        f"top-1 prediction; WGS-84 geodesic distance; an image counts when its error is "
        f"{metrics.comparison} the threshold ({who})"
    )


def _counts(metrics: EvalMetrics) -> str:
    text = f"{metrics.n_evaluated} images evaluated"
    extra = [
        f"{n} {what}"
        for n, what in (
            (metrics.n_missing, "missing"),
            (metrics.n_failed, "undecodable"),
            (metrics.n_bad_rows, "bad CSV rows"),
        )
        if n
    ]
    return text + (f" ({', '.join(extra)} excluded)" if extra else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _km(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def show_metrics(metrics: EvalMetrics, random_weights: bool) -> None:
    """Accuracy per threshold and the median and mean error of a benchmark run."""
    from rich.markup import escape
    from rich.table import Table

    from ..evaluate import SCALES

    console = stdout_console()
    acc = metrics.accuracy
    notes = [_counts(metrics), _convention(metrics)]
    if random_weights:
        notes.append("model with random weights: these numbers measure nothing")
    if not console.is_terminal:
        out = [f"# {n}" for n in notes]
        out.append("threshold_km\tscale\taccuracy_pct\tcorrect")
        for t in metrics.thresholds_km:
            scale = SCALES.get(t, "")
            out.append(f"{t:g}\t{scale}\t{_pct(acc[t])}\t{metrics.correct[t]}")
        out.append(f"# median_error_km\t{_km(metrics.median_km)}")
        out.append(f"# mean_error_km\t{_km(metrics.mean_km)}")
        sys.stdout.write("\n".join(out) + "\n")
        return
    table = Table(title=escape(_counts(metrics)), title_justify="left", header_style="bold")
    table.add_column("within", justify="right")
    table.add_column("scale")
    table.add_column("accuracy", justify="right")
    table.add_column("images", justify="right")
    for t in metrics.thresholds_km:
        table.add_row(
            f"{metrics.comparison} {t:g} km",
            SCALES.get(t, ""),
            f"{_pct(acc[t])} %",
            f"{metrics.correct[t]}",
        )
    table.add_section()
    table.add_row("median error", "", f"{_km(metrics.median_km)} km", "")
    table.add_row("mean error", "", f"{_km(metrics.mean_km)} km", "")
    console.print(table)
    for note in notes[1:]:
        console.print(escape(note), style="dim")


# --- geoguess models ----------------------------------------------------------------------


def show_model_list(
    summaries: list[dict[str, Any]],
    default: str | None,
    cache_root: Path | None,
    cache_bytes: int,
    cache_entries: int,
) -> None:
    """Installed model sets: tab-separated lines when piped, one block per set on a
    terminal, then where the derived cache is (``cache_root`` None: it is off)."""
    columns = ["name", "precisions", "galleries", "size", "cache", "backbone", "path"]
    rows = []
    for s in summaries:
        backbone = s["backbone"] + (" (random weights)" if s["random_weights"] else "")
        rows.append(
            {
                "name": s["name"] + (" (default)" if s["name"] == default else ""),
                "precisions": ", ".join(s["precisions"]),
                "galleries": ", ".join(s["galleries"]),
                "size": megabytes(s["size_bytes"]),
                "cache": megabytes(s["cache_bytes"]),
                "backbone": backbone,
                "path": s["path"],
                "status": "damaged: run geoguess models verify " + s["name"]
                if s["damaged"]
                else "",
            }
        )
    if not stdout_console().is_terminal:
        sys.stdout.write("\t".join(columns) + "\n")
        for row in rows:
            sys.stdout.write("\t".join(row[c] for c in columns) + "\n")
        return
    # One block per set, a field per line: a table cut names and paths short in an
    # 80-column terminal, and a path must be whole to be copied.
    for i, row in enumerate(rows):
        if summaries[i]["cache_bytes"]:
            row = {**row, "size": f"{row['size']} (+ {row['cache']} derived cache)"}
        lines = [row["name"]] + [
            f"  {field:<11}{row[field]}"
            for field in ("path", "precisions", "galleries", "size", "backbone", "status")
            if row[field]
        ]
        typer.echo("\n".join(lines) + "\n")
    if cache_root is not None:
        typer.echo(
            f"derived cache: {megabytes(cache_bytes)} in {cache_entries} entries\n"
            f"  {cache_root}\n  (geoguess models cache clear empties it)"
        )


def model_info_lines(info: dict[str, Any], manifest: Manifest) -> list[str]:
    """`geoguess models info`: the summary the command gathered, a field per line."""
    lines = [
        f"name         {info['name']}",
        f"path         {info['path']}",
        f"created      {info['created']}",
        f"backbone     {info['backbone']}"
        + ("  (RANDOM WEIGHTS)" if info["random_weights"] else ""),
        f"precisions   {', '.join(info['precisions'])}",
        "galleries    "
        + ", ".join(f"{g} ({e.size:,} points)" for g, e in manifest.galleries.items()),
        f"size         {info['size_bytes'] / 1e6:,.1f} MB"
        + (f" (+ {megabytes(info['cache_bytes'])} derived cache)" if info["cache_bytes"] else ""),
        f"provider     {info['provider']} (available: {', '.join(info['providers_available'])})",
    ]
    for prec, q in info["quality"].items():
        if "top1_agreement" in q:
            lines.append(
                f"{prec:<12} cosine to fp32 {q['cosine_mean']:.4f}, top-1 agreement "
                f"{q['top1_agreement']:.3f}, top-5 overlap {q['top5_overlap']:.3f} "
                f"({q.get('scheme', '')})"
            )
    return lines


def show_model_info(info: dict[str, Any], manifest: Manifest) -> None:
    typer.echo("\n".join(model_info_lines(info, manifest)))


def show_derived_cache(
    cache_root: Path | None, total_bytes: int, rows: list[dict[str, Any]]
) -> None:
    """`geoguess models cache`: where the cache is, its size, and each entry's owners."""
    if cache_root is None:
        typer.echo("the derived cache is off (GEOGUESS_DERIVED_CACHE=0)")
        return
    typer.echo(f"{cache_root}\n{megabytes(total_bytes)} in {len(rows)} entries")
    for r in rows:
        owner = ", ".join(r["model_sets"]) or "no installed set"
        typer.echo(f"  {r['kind']:<16}{megabytes(r['size_bytes']):>10}  {owner}\n    {r['path']}")


def show_gallery_list(galleries: list[dict[str, Any]]) -> None:
    """`geoguess models gallery list`: a rich table on a terminal, tab-separated when piped."""
    table = []
    for r in galleries:
        trees = ", ".join(t + (" (default)" if t == r["default_tree"] else "") for t in r["trees"])
        table.append(
            [
                r["name"] + (" (default)" if r["default"] else ""),
                f"{r['size']:,}" if r["size"] is not None else "?",
                trees or "none: flat search only",
                r["source"] or "",
            ]
        )
    print_table(stdout_console(), ["name", "points", "trees", "source"], table)


def show_bench(rows: list[Any], scan_rows: list[Any], help_s: float, *, n_photos: int) -> None:
    """``geoguess bench``: the per-image table, the scan line and the ``--help`` time."""
    console = stdout_console()
    columns = [
        "variant",
        "provider",
        "warm ms/image",
        "speed-up",
        "cold start s",
        "CLI cold s",
        "peak RSS MB",
        "cosine to fp32",
    ]
    table_rows = [
        [
            r.variant,
            r.device,
            f"{r.warm_ms:,.0f}",
            f"{r.speedup:.1f}x" if r.speedup else "",
            f"{r.cold_s:.2f}",
            f"{r.cli_cold_s:.2f}" if r.cli_cold_s else "",
            f"{r.peak_rss_mb:,.0f}",
            f"{r.cosine_to_fp32:.4f}" if r.cosine_to_fp32 is not None else "",
        ]
        for r in rows
    ]
    print_table(
        console,
        columns,
        table_rows,
        title=f"Per image, {n_photos} photos",
        right=set(columns[2:]),
    )
    for s in scan_rows:
        console.print(
            f"Scan ({s.precision}, batch {s.batch_size}, {s.files} files): "
            f"{s.scan_files_per_s:.2f} files/s against {s.encoder_images_per_s:.2f} "
            f"images/s for the bare encoder on pre-decoded tensors; ratio {s.ratio:.0%} "
            f"(median of {s.rounds} back-to-back rounds); "
            f"time outside the encoder {s.outside_encoder_share:.0%}; "
            f"peak RSS {s.peak_rss_mb:,.0f} MB"
        )
    console.print(f"geoguess --help: {help_s:.2f} s")


_SEARCH_COLUMNS = (
    ("method", "method"),
    ("levels", "tree / index"),
    ("beam", "beam"),
    ("top", "top level"),
    ("ef", "ef"),
    ("proxy_cosine", "cos"),
    ("agreement", "top-1 = flat"),
    ("median_km", "median km"),
    ("p95_km", "p95 km"),
    ("share_compared", "dot products"),
    ("us_per_query", "us/query"),
    ("rss_mb", "RAM MB"),
    ("disk_mb", "disk MB"),
    ("build_s", "build s"),
)


def _search_cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "share_compared":
        return f"{value * 100:.3g}%"
    if key == "agreement":
        return f"{value:.3f}"
    if key in ("us_per_query", "rss_mb", "disk_mb", "median_km", "p95_km"):
        return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
    if key == "build_s":
        return f"{value:.1f}"
    return str(value)


def show_search_bench(rows: list[Any], queries: Path | None) -> None:
    """``geoguess bench search``: one table row per tree, beam and query set."""
    console = stdout_console()
    kind = rows[0].queries if rows else "proxy"
    title = (
        f"Search: gallery {rows[0].gallery_size:,} points, "
        + (
            "PROXY queries (held-out location embeddings + noise; cos = cosine to the clean point)"
            if kind == "proxy"
            else f"real image embeddings from {queries}"
        )
        if rows
        else "Search: no rows"
    )
    columns = [head for _, head in _SEARCH_COLUMNS]
    table_rows = [[_search_cell(k, r.to_dict()[k]) for k, _ in _SEARCH_COLUMNS] for r in rows]
    print_table(console, columns, table_rows, title=title, right=set(columns[2:]))
    for n in sorted({n for r in rows for n in r.notes if "replay" not in n}):
        console.print(f"note: {n}")
