"""geoguess.environment: every GEOGUESS_* name defined once, one yes/no rule, all documented."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from geoguess import derived, environment
from geoguess.builder import hub
from geoguess.llm import privacy

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "geoguess"
HOME_MODULE = PACKAGE / "environment.py"
_NAME = re.compile(r"^GEOGUESS_[A-Z0-9_]+$")


def _constants() -> dict[str, str]:
    """environment.py's GEOGUESS_* constants: attribute -> variable name."""
    return {
        attr: value
        for attr, value in vars(environment).items()
        if attr.isupper() and isinstance(value, str) and _NAME.match(value)
    }


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        (None, True, True),
        (None, False, False),
        ("", True, True),
        ("", False, False),
        ("   ", False, False),
        ("1", False, True),
        ("true", False, True),
        ("TRUE", False, True),
        ("True", False, True),
        ("yes", False, True),
        ("YeS", False, True),
        ("y", False, True),
        ("Y", False, True),
        ("on", False, True),
        ("On", False, True),
        (" yes \n", False, True),
        ("0", True, False),
        ("false", True, False),
        ("FALSE", True, False),
        ("no", True, False),
        ("No", True, False),
        ("n", True, False),
        ("off", True, False),
        ("OFF", True, False),
        ("\t0 ", True, False),
        ("maybe", True, True),
        ("maybe", False, False),
        ("2", False, False),
        ("2", True, True),
        ("-1", True, True),
        ("yes please", False, False),
        ("tru", True, True),
    ],
)
def test_flag_truth_table(
    monkeypatch: pytest.MonkeyPatch, value: str | None, default: bool, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("GEOGUESS_TEST_FLAG", raising=False)
    else:
        monkeypatch.setenv("GEOGUESS_TEST_FLAG", value)
    assert environment.flag("GEOGUESS_TEST_FLAG", default) is expected
    assert environment.parse_flag(value, default) is expected


def test_text_strips_and_reads_empty_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEOGUESS_TEST_TEXT", raising=False)
    assert environment.text("GEOGUESS_TEST_TEXT") is None
    monkeypatch.setenv("GEOGUESS_TEST_TEXT", "  ")
    assert environment.text("GEOGUESS_TEST_TEXT") is None
    monkeypatch.setenv("GEOGUESS_TEST_TEXT", " 4 \n")
    assert environment.text("GEOGUESS_TEST_TEXT") == "4"


@pytest.mark.parametrize("value", ["off", "N", "FALSE", "0"])
def test_derived_cache_is_off_for_every_no_word(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv(environment.CACHE_DIR, str(tmp_path))
    monkeypatch.setenv(environment.DERIVED_CACHE, value)
    assert derived.cache_dir() is None


@pytest.mark.parametrize("value", ["", "1", "on", "anything"])
def test_derived_cache_stays_on_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv(environment.CACHE_DIR, str(tmp_path))
    monkeypatch.setenv(environment.DERIVED_CACHE, value)
    assert derived.cache_dir() == tmp_path / "derived"


@pytest.mark.parametrize(("value", "expected"), [("ON", True), ("y", True), ("no", False)])
def test_llm_consent_follows_the_rule(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv(environment.LLM_CONSENT, value)
    assert privacy.consent_given() is expected
    assert privacy.CONSENT_ENV == environment.LLM_CONSENT


@pytest.mark.parametrize(
    ("hf", "transformers", "expected"),
    [
        (None, None, False),
        ("yes", None, True),
        ("On", None, True),
        ("0", None, False),
        (None, "1", True),
        ("", "true", True),
        # huggingface_hub's precedence: a set HF_HUB_OFFLINE wins over TRANSFORMERS_OFFLINE.
        ("0", "1", False),
    ],
)
def test_hub_offline_follows_the_rule(
    monkeypatch: pytest.MonkeyPatch, hf: str | None, transformers: str | None, expected: bool
) -> None:
    for name, value in (("HF_HUB_OFFLINE", hf), ("TRANSFORMERS_OFFLINE", transformers)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert hub._env_offline() is expected


def _literal_names(source: str) -> list[tuple[int, str]]:
    """(line, value) of each string constant that is a whole GEOGUESS_* name, docstrings
    (the first statement of a module, class or function) left out."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
        ):
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and _NAME.match(node.value)
    ]


def test_the_literal_finder_skips_docstrings_only() -> None:
    source = (
        '"""GEOGUESS_MODULE_DOC"""\n'
        "class C:\n"
        '    """GEOGUESS_CLASS_DOC"""\n'
        "    def f(self):\n"
        '        """GEOGUESS_FUNCTION_DOC"""\n'
        '        return os.environ.get("GEOGUESS_READ")\n'
        'X = "GEOGUESS_CONSTANT"\n'
        'Y = "see GEOGUESS_HOME"\n'
        '"GEOGUESS_LATER_EXPRESSION"\n'
    )
    found = [value for _, value in _literal_names(source)]
    assert sorted(found) == ["GEOGUESS_CONSTANT", "GEOGUESS_LATER_EXPRESSION", "GEOGUESS_READ"]


def test_variable_names_are_written_only_in_the_environment_module() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 30 and HOME_MODULE in sources
    elsewhere = [
        f"{path.relative_to(REPO)}:{line}: {value}"
        for path in sources
        if path != HOME_MODULE
        for line, value in _literal_names(path.read_text(encoding="utf-8"))
    ]
    assert elsewhere == [], "use the constants of geoguess.environment"
    defined = [value for _, value in _literal_names(HOME_MODULE.read_text(encoding="utf-8"))]
    assert sorted(defined) == sorted(_constants().values())
    assert len(set(defined)) == len(defined), "a variable is named twice"


def test_every_constant_is_read_somewhere() -> None:
    others = "\n".join(
        p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py") if p != HOME_MODULE
    )
    unused = [a for a in _constants() if not re.search(rf"\benvironment\.{a}\b", others)]
    assert unused == []


def _documented() -> set[str]:
    """The GEOGUESS_* names in the first column of docs/cli.md's environment table."""
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(GEOGUESS_[A-Z0-9_]+)", section, re.M))


def test_every_variable_is_documented_and_only_those() -> None:
    constants = set(_constants().values())
    assert len(constants) >= 7
    docs = "\n".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "docs").glob("*.md")))
    assert [n for n in sorted(constants) if not re.search(rf"\b{n}\b", docs)] == []
    assert _documented() == constants


def test_importing_the_module_loads_nothing_heavy() -> None:
    code = (
        "import sys, geoguess.environment\n"
        "heavy = {'numpy', 'onnxruntime', 'typer', 'rich', 'PIL', 'platformdirs'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
