"""The documentation says what the code does: links resolve, named commands and options
exist, tables of written properties match what is written, and the README stays short."""

from __future__ import annotations

import difflib
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from geoguess.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS]
# A new user reads the README in five minutes; reference material belongs in docs/.
README_MAX_LINES = 250

_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
_SHELL = {"", "bash", "sh", "shell", "console"}
# Tokens that end one shell command and may start another.
_SEPARATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "(", ")", "--"}


def _links(text: str) -> list[str]:
    return [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t]


def _ids(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_local_links_resolve(page: Path) -> None:
    for target in _links(page.read_text(encoding="utf-8")):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def _slugs(page: Path) -> set[str]:
    # GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens,
    # repeats numbered -1, -2, ... Lines inside code fences are not headings.
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    slugs: set[str] = set()
    counts: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?)[ #]*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_anchors_name_headings(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
        if "://" in target or not (target == "" or target.endswith(".md")):
            continue
        linked = (page.parent / target) if target else page
        assert anchor in _slugs(linked), f"{page.name} links to missing {target}#{anchor}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in DOCS:
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_docs_index_lists_every_page() -> None:
    index = REPO / "docs" / "README.md"
    linked = set(_links(index.read_text(encoding="utf-8")))
    missing = [p.name for p in DOCS if p != index and p.name not in linked]
    assert not missing, f"docs/README.md does not list {missing}"


def test_readme_is_a_short_read() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; move reference to docs/"


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    development = readme[readme.index("## Development") :]
    assert "bash .ci/run" in development
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    pytest_lines = [ln for ln in ci.splitlines() if ln.startswith("python -m pytest")]
    named = re.findall(r"`(python -m pytest[^`]*)`", development)
    assert pytest_lines and named
    assert all(ln.startswith(named[0]) for ln in pytest_lines), (pytest_lines, named)


def _shell_commands(text: str) -> list[str]:
    """Command lines of the shell code blocks, continuations joined; in a block that
    shows a session (`$ ` prompts), only the prompted lines."""
    found: list[str] = []
    for lang, body in _FENCE.findall(text):
        if lang not in _SHELL:
            continue
        lines = body.splitlines()
        prompted = [ln[2:] for ln in lines if ln.startswith("$ ")]
        found += "\n".join(prompted or lines).replace("\\\n", " ").splitlines()
    return found


def _inline_commands(text: str) -> list[str]:
    prose = _FENCE.sub("", text)
    spans = (s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", prose))
    return [s for s in spans if s.startswith("geoguess ")]


def _geoguess_invocations(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote in prose: not a command line
        return []
    segments: list[list[str]] = [[]]
    for tok in tokens:
        if tok in _SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(tok)
    calls = []
    for seg in segments:
        while seg and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", seg[0]):
            seg = seg[1:]  # VAR=value before the command
        if seg[:3] == ["python", "-m", "geoguess"]:
            seg = ["geoguess", *seg[3:]]
        if seg[:1] == ["geoguess"]:
            calls.append(seg[1:])
    return calls


def _check_invocation(root, args: list[str]) -> str | None:
    cmd, path = root, "geoguess"
    if args and args[0] not in root.commands and args[0] not in {"--help", "-h", "--version"}:
        # geoguess PHOTO... is geoguess locate PHOTO..., but the CLI refuses a word close
        # to a command name (a typo) rather than take it for a photo.
        if difflib.get_close_matches(args[0].lower(), list(root.commands), n=1, cutoff=0.75):
            return f"{args[0]!r} looks like a misspelt command"
        args = ["locate", *args]
    while hasattr(cmd, "commands") and args and not args[0].startswith("-"):
        if args[0] not in cmd.commands:
            if cmd is root or not cmd.commands:
                break
            return f"{path} has no command {args[0]!r}"
        cmd, path, args = cmd.commands[args[0]], f"{path} {args[0]}", args[1:]
    known = {"--help", "-h"}
    for param in cmd.params:
        known |= set(param.opts) | set(param.secondary_opts)
    for arg in args:
        name = arg.split("=", 1)[0]
        # `-` is standard input; -33.9 a number, not an option.
        is_option = arg.startswith("-") and arg != "-" and not re.fullmatch(r"-\d[\d.]*", arg)
        if is_option and name not in known:
            return f"{path} has no option {name}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_commands_in_code_name_real_commands_and_options(page: Path) -> None:
    root = typer.main.get_command(app)
    text = page.read_text(encoding="utf-8")
    problems, checked = [], 0
    for line in _shell_commands(text) + _inline_commands(text):
        for args in _geoguess_invocations(line):
            checked += 1
            problem = _check_invocation(root, args)
            if problem:
                problems.append(f"{problem}: {line.strip()}")
    assert not problems, f"{page.name}: " + "; ".join(problems)
    if page in (REPO / "README.md", REPO / "docs" / "cli.md"):
        assert checked > 10, "no geoguess command lines found: the parser above is broken"


@pytest.mark.parametrize("page", PAGES, ids=_ids)
def test_python_blocks_compile(page: Path) -> None:
    # The README's snippet also runs, in tests/test_public_api.py.
    for lang, body in _FENCE.findall(page.read_text(encoding="utf-8")):
        if lang == "python":
            compile(body, str(page), "exec")


def test_docs_document_every_command_and_option() -> None:
    """docs/ is the full reference: every command and option is named somewhere in it."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)

    def walk(group, prefix: str = "geoguess"):
        for name, cmd in sorted(group.commands.items()):
            yield f"{prefix} {name}", cmd
            if hasattr(cmd, "commands"):
                yield from walk(cmd, f"{prefix} {name}")

    missing = []
    for path, cmd in walk(typer.main.get_command(app)):
        if path not in text:
            missing.append(path)
        for param in cmd.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help" and opt not in text:
                    missing.append(f"{path} {opt}")
    assert not missing, f"docs/ does not mention: {missing}"


def _options(command: str) -> set[str]:
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return set(re.findall(r"--[a-z][a-z0-9-]+", res.output))


def test_photo_libraries_page_names_real_options() -> None:
    text = (REPO / "docs" / "photo-libraries.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(--xmp[a-z-]*)", text))
    assert named
    assert named <= _options("scan")


def test_photo_libraries_table_lists_what_is_written(tmp_path: Path) -> None:
    from geoguess.xmp import write_sidecar

    text = (REPO / "docs" / "photo-libraries.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`((?:exif|geoguess):[A-Za-z0-9]+)`", text))
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"")
    props = {
        "Probability": "0.1",
        "SpreadP50Km": "1",
        "SpreadP90Km": "2",
        "Place": "x",
        "Confidence": "city",
    }
    side = write_sidecar(photo, 1.0, 2.0, properties={**props, "Model": "m"}).path
    written = set(re.findall(r"\b((?:exif|geoguess):[A-Za-z0-9]+)=", side.read_text()))
    assert written <= documented, written - documented


def test_maps_page_matches_the_code() -> None:
    from geoguess.maps.thumbnails import MAX_THUMBNAILS, THUMBNAIL_PX
    from geoguess.maps.view import ERROR_CLASSES

    text = (REPO / "docs" / "maps.md").read_text(encoding="utf-8")
    bounds = [float(b.replace(",", "")) for b in re.findall(r"\| < ([\d,]+) km", text)]
    assert bounds == [b for b, _, _ in ERROR_CLASSES if b != float("inf")]
    assert f"{MAX_THUMBNAILS:,} photos" in text
    assert f"{THUMBNAIL_PX} px" in text
    page_js = (REPO / "geoguess" / "maps" / "page.js").read_text(encoding="utf-8")
    assert "photos.length > 100" in page_js and "Over 100 photos are clustered" in text
    assert "disableClusteringAtZoom: 11" in page_js and "zoom 11" in text
    assert _options("map") >= {"--output", "--tiles", "--no-thumbnails"}
