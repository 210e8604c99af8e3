"""The README and docs/ show only what exists: commands, options, make targets, paths, modules, links.

Every ``hpopipe <command> [<subcommand>] [--option ...]`` shown in a code block or in inline code
must parse in :func:`hpopipe.cli.main.build_parser` (checked in-process, no subprocess); every
``make <target>`` must be a Makefile target; every project path (``stages/...``, ``src/hpopipe/...``,
``docs/...``, ``params.yaml``, ...) and every dotted ``hpopipe.x.y`` name must exist; every relative
link (and its ``#anchor``) must resolve. A page that drifts from the code fails here, by name.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from hpopipe.cli.main import build_parser

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?<![\w./\-\[:'\"])hpopipe[ \t]+([^\n#`]*)")
MAKE = re.compile(r"(?<![\w./-])make[ \t]+([a-z][\w-]*)")
DOTTED = re.compile(r"(?<![\w./-])hpopipe(?:\.\w+)+")
PATH_PREFIXES = ("stages/", "src/hpopipe/", "flows/", "benchmarks/", "tools/", "docs/", "tests/", "examples/")
PATH_FILES = {"params.yaml", "dvc.yaml", "dvc.lock", "Makefile", "pyproject.toml", "constraints.txt"}


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def split_page(text: str) -> tuple[list[str], list[str], str]:
    """(code blocks, inline code spans, prose with the code blocks removed)."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    spans = [m.group(2).strip() for m in INLINE.finditer(prose)]
    return blocks, spans, prose


def code_lines(page: Path) -> Iterator[str]:
    """Every line of every code block, and every inline code span, of a page."""
    blocks, spans, _ = split_page(page.read_text(encoding="utf-8"))
    for block in blocks:
        for line in block.splitlines():
            yield line.removeprefix("$ ")
    yield from spans


# ------------------------------------------------------------------------------------ commands


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser | None]:
    """A parser's sub-commands (sub-parsers, or a positional with fixed choices such as pause|resume)."""
    found: dict[str, argparse.ArgumentParser | None] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
        elif not action.option_strings and action.choices:
            found.update(dict.fromkeys(action.choices))
    return found


def _actions(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.Action], int]:
    """A parser's options by flag, and how many plain positionals (not sub-commands) it takes."""
    flags = {flag: a for a in parser._actions for flag in a.option_strings}
    positionals = sum(
        1
        for a in parser._actions
        if not a.option_strings and not a.choices and not isinstance(a, argparse._SubParsersAction)
    )
    return flags, positionals


@cache
def commands() -> dict[str, argparse.ArgumentParser | None]:
    """``hpopipe``'s commands, from the real parser tree."""
    return _choices(build_parser())


def check_command(words: list[str]) -> list[str]:
    """Problems with one shown ``hpopipe ...`` command line (the words after ``hpopipe``).

    Option values and ``[NAME]``-style placeholders are accepted wherever the parser takes a
    value; a word where the parser takes none (``hpopipe retrain serve``) is a problem.
    """
    name = words[0]
    if name not in commands():
        return [f"hpopipe {name}: no such command (hpopipe --help lists {sorted(commands())})"]
    parser = commands()[name]
    assert parser is not None
    flags, positionals = _actions(parser)
    nested = _choices(parser)
    problems: list[str] = []
    rest = iter(words[1:])
    for raw in rest:
        word = raw.strip("[]().,")
        if not word or word in {"|", "/", "&&", ";", "||", ">", "<"} or word.startswith(("/", "$(")):
            break
        if word.startswith("-") and not re.fullmatch(r"-+", word):
            flag = word.split("=", 1)[0]
            action = flags.get(flag)
            if action is None:
                problems.append(f"hpopipe {name}: no option {flag}")
            elif action.nargs != 0 and "=" not in word:
                next(rest, None)  # its value
            continue
        if nested:
            choices = word.split("|")
            problems += [
                f"hpopipe {name}: no subcommand {c} ({sorted(nested)})" for c in choices if c not in nested
            ]
            inner = nested.get(choices[0])
            if inner is not None:  # a sub-parser: its own options and positionals from here on
                flags, positionals = _actions(inner)
            nested = {}
        elif positionals > 0:
            positionals -= 1
        else:
            problems.append(f"hpopipe {name}: takes no argument {word!r} here")
    return problems


def shown_commands(page: Path) -> Iterator[list[str]]:
    for line in code_lines(page):
        for m in COMMAND.finditer(line):
            words = m.group(1).split()
            if words and re.fullmatch(r"[a-z][\w-]*", words[0]):
                yield words


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_hpopipe_command_shown_exists(page: Path) -> None:
    problems = [p for words in shown_commands(page) for p in check_command(words)]
    assert not problems, "\n".join(problems)


def test_the_command_check_catches_a_stale_command() -> None:
    """The checker itself: a removed command, subcommand or option is reported."""
    assert check_command(["retrain", "serve"])  # `hpopipe serve` is the command
    assert check_command(["retrain", "--n-trials", "50", "-S", "cv.folds=3"]) == []
    assert check_command(["status", "--study", "x"]) == []
    assert check_command(["sweep", "pause|resume|cancel", "[NAME]"]) == []
    assert check_command(["space", "export", "--format", "wandb", "--output", "f"]) == []
    assert check_command(["studys"])
    assert check_command(["resume", "--retry-failure"])
    assert check_command(["space", "convert"])
    assert check_command(["space", "import", "--from", "sweep.yaml", "--params", "p.yaml"]) == []
    assert check_command(["sweep", "stop"])


def test_readme_and_docs_show_the_main_commands() -> None:
    """The quick start's commands are shown, so the check above has something to check."""
    shown = {words[0] for page in PAGES for words in shown_commands(page)}
    assert {
        "status",
        "studies",
        "validate",
        "predict",
        "resume",
        "restore",
        "retrain",
        "serve",
        "worker",
    } <= shown


# ---------------------------------------------------------------------------------- dvc commands


def shown_dvc_commands(page: Path) -> Iterator[list[str]]:
    """The words after ``dvc`` of every command line in a page's code blocks (comments dropped).

    Inline spans are left out: prose quotes fragments (``dvc exp run -S``) that are not commands.
    """
    blocks, _, _ = split_page(page.read_text(encoding="utf-8"))
    for block in blocks:
        for line in block.splitlines():
            m = re.match(r"dvc[ \t]+(.+)", line.removeprefix("$ ").strip())
            if m:
                yield shlex.split(m.group(1), comments=True)


def check_dvc_command(words: list[str]) -> str | None:
    """A problem with one shown ``dvc ...`` command, by the installed DVC's own parser; None if none."""
    from dvc.cli import DvcParserError, parse_args

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            parse_args(words)
    except DvcParserError:
        return f"dvc {shlex.join(words)}: DVC's parser refuses it"
    return None


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_dvc_command_shown_parses(page: Path) -> None:
    problems = [p for words in shown_dvc_commands(page) if (p := check_dvc_command(words))]
    assert not problems, "\n".join(problems)


def test_the_dvc_command_check_catches_a_wrong_command() -> None:
    assert check_dvc_command(["exp", "run", "--run-all", "--jobs", "2"]) is None
    assert check_dvc_command(["exp", "run", "--tmp"])
    assert check_dvc_command(["queue", "begin"])


def test_the_experiment_workflow_is_shown() -> None:
    shown = {tuple(words[:2]) for page in PAGES for words in shown_dvc_commands(page)}
    assert {("exp", "run"), ("exp", "show"), ("exp", "apply"), ("queue", "status")} <= shown
    runs = [w for page in PAGES for w in shown_dvc_commands(page) if w[:2] == ["exp", "run"]]
    assert any("--queue" in w for w in runs) and any("--temp" in w for w in runs)
    assert any({"--run-all", "--jobs"} <= set(w) for w in runs)


# ---------------------------------------------------------------------------------- make targets


@cache
def make_targets() -> frozenset[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return frozenset(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_make_target_shown_exists(page: Path) -> None:
    shown = {m.group(1) for line in code_lines(page) for m in MAKE.finditer(line)}
    missing = sorted(shown - make_targets())
    assert not missing, f"make targets not in the Makefile: {missing}"


# ------------------------------------------------------------------------------- paths and names


def _expand(token: str) -> list[str]:
    """``a/{x,y}.md`` -> ``a/x.md``, ``a/y.md`` (one brace group, as the pages write them)."""
    m = re.search(r"\{([^{}]*)\}", token)
    if not m:
        return [token]
    return [token[: m.start()] + part + token[m.end() :] for part in m.group(1).split(",")]


def shown_paths(page: Path) -> set[str]:
    paths = set()
    for line in code_lines(page):
        for token in line.split():
            token = token.strip("`'\"(),;:").split("::", 1)[0]
            if any(c in token for c in "<>*$") or "..." in token:
                continue
            for path in _expand(token):
                if path in PATH_FILES or path.startswith(PATH_PREFIXES):
                    paths.add(path)
    return paths


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_project_path_shown_exists(page: Path) -> None:
    missing = sorted(p for p in shown_paths(page) if not (REPO / p).exists())
    assert not missing, f"paths that do not exist: {missing}"


@cache
def defined_names(module: Path) -> frozenset[str]:
    """Top-level names a module defines (functions, classes, assignments, imports, ``__all__``).

    ``__all__`` counts: a package's public names may load lazily (``hpopipe.connect``).
    """
    names: set[str] = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                names.update(ast.literal_eval(node.value))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def resolves(dotted: str) -> bool:
    """``hpopipe.sweep.recovery.SeededSampler``: a module of src/, then at most one name in it."""
    parts = dotted.split(".")
    base = REPO / "src"
    for i in range(len(parts), 0, -1):
        stem = base.joinpath(*parts[:i])
        module = stem / "__init__.py" if stem.is_dir() else stem.with_suffix(".py")
        if module.is_file():
            rest = parts[i:]
            return not rest or (len(rest) == 1 and rest[0] in defined_names(module))
    return False


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_module_name_shown_exists(page: Path) -> None:
    shown = {m.group(0) for line in code_lines(page) for m in DOTTED.finditer(line)}
    stale = sorted(name for name in shown if not resolves(name))
    assert not stale, f"no such module or name under src/: {stale}"


def test_the_name_check_catches_the_old_flat_layout() -> None:
    assert resolves("hpopipe.sweep.study")
    assert resolves("hpopipe.sweep.seeded_sampler.SeededSampler")
    assert not resolves("hpopipe.study")
    assert not resolves("hpopipe.fanout.run_workers")


# ---------------------------------------------------------------------------- benchmark commands

BENCH_PAGES = [*PAGES, REPO / "benchmarks" / "README.md"]
BENCH_COMMAND = re.compile(r"python[ \t]+(benchmarks/[\w-]+\.py)([^\n#`|;&>]*)")


@cache
def benchmark_options(script: Path) -> frozenset[str]:
    """The ``--options`` a benchmark script's argparse defines, read from its source (not run:
    the scripts import torch); ``--no-X`` counts where ``--X`` is a boolean option."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            for arg in node.args:
                flag = arg.value if isinstance(arg, ast.Constant) else None
                if isinstance(flag, str) and flag.startswith("--"):
                    found |= {flag, f"--no-{flag[2:]}"}
    return frozenset(found | {"--help"})


def check_benchmark_command(script: str, args: list[str]) -> list[str]:
    """Problems with one shown ``python benchmarks/X.py ...`` line: no such script, or no such option."""
    path = REPO / script
    if not path.is_file():
        return [f"{script}: no such script"]
    flags = [a.split("=", 1)[0] for a in args if a.startswith("--")]
    return [f"{script}: no option {f}" for f in flags if f not in benchmark_options(path)]


def shown_benchmark_commands(page: Path) -> Iterator[tuple[str, list[str]]]:
    blocks, _, _ = split_page(page.read_text(encoding="utf-8"))
    for block in blocks:
        for line in block.splitlines():
            for m in BENCH_COMMAND.finditer(line):
                yield m.group(1), m.group(2).split()


@pytest.mark.parametrize("page", BENCH_PAGES, ids=page_id)
def test_every_benchmark_command_shown_exists(page: Path) -> None:
    problems = [
        p for script, args in shown_benchmark_commands(page) for p in check_benchmark_command(script, args)
    ]
    assert not problems, "\n".join(problems)


def test_the_benchmark_command_check_catches_a_stale_option() -> None:
    assert (
        check_benchmark_command("benchmarks/overhead.py", ["--quick", "--out-dir", "/tmp/b", "--no-peer"])
        == []
    )
    assert check_benchmark_command("benchmarks/overhead.py", ["--out", "x"])  # renamed to --out-dir
    assert check_benchmark_command("benchmarks/nothing.py", [])
    assert {script for script, _ in shown_benchmark_commands(REPO / "benchmarks" / "README.md")} >= {
        f"benchmarks/{name}.py" for name in ("overhead", "stage_cpu", "workers", "cv_pool", "repro_compare")
    }


def test_make_bench_runs_scripts_that_exist() -> None:
    """Every script the Makefile's bench targets run is there, with the options they pass."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    shown = [
        (m.group(1), m.group(2).replace("$(BENCH_FLAGS)", "--quick --out-dir D").split())
        for m in BENCH_COMMAND.finditer(text)
    ]
    assert len(shown) >= 5
    problems = [p for script, args in shown for p in check_benchmark_command(script, args)]
    assert not problems, "\n".join(problems)


# -------------------------------------------------------------------------------------- links


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    _, _, prose = split_page(page.read_text(encoding="utf-8"))
    return frozenset(slug(h) for h in re.findall(r"^#{1,6}\s+(.*)$", prose, re.M))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_resolves(page: Path) -> None:
    _, _, prose = split_page(page.read_text(encoding="utf-8"))
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_readme_is_a_quick_start() -> None:
    """The README stays short; the rest lives in docs/, linked from it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for page in PAGES[1:]:
        assert f"({page_id(page)})" in readme, f"README does not link {page_id(page)}"


def test_study_database_is_not_a_dvc_output() -> None:
    """The docs say the study is not a DVC output: dvc.yaml must agree."""
    dvc_yaml = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert "study.db" not in dvc_yaml and "study.journal" not in dvc_yaml


def test_architecture_lists_every_module() -> None:
    """docs/architecture.md has one line per library module, and lists no module that is gone."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.M))
    src = REPO / "src" / "hpopipe"
    modules = {str(p.relative_to(src)) for p in src.rglob("*.py") if p.name != "__init__.py"}
    assert not modules - listed, f"modules missing from docs/architecture.md: {sorted(modules - listed)}"
    gone = sorted(m for m in listed if not (src / m).is_file())
    assert not gone, f"docs/architecture.md lists modules that do not exist: {gone}"
