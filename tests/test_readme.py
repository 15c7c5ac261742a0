"""Every README.md code block runs as written.

Python blocks: each runs on its own (a fresh namespace, in an empty folder), so a block that
leans on an earlier one fails. Shell blocks: every command is checked without running it (the
commands are long jobs): ``stseq ...`` (also under ``torchrun -m stseq.cli``) must parse with the
real argument parser, scripts and test paths must exist and know the long options used (their
``--help``), modules run with ``python -m`` must exist, ``pip install .[extras]`` must name
extras pyproject.toml declares. A command this file does not know how to check fails the test:
teach ``_check_command`` about it.
"""

import ast
import importlib.util
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib
import traceback

import pytest

from stseq import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_LANGUAGES = {"python", "py"}
SHELL_LANGUAGES = {"bash", "sh", "shell"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
ACCEPTED = {"cd", "git", "export", "source", "mkdir", "echo", "nvidia-smi"}  # nothing to check


def code_blocks(text):
    """(language, first line number, source) of every fenced block of a Markdown text."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w+-]*)", line)
        if fence and language is None:
            language, start, lines = fence.group(1).lower() or "text", number + 1, []
        elif fence:
            blocks.append((language, start, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def shell_commands(source):
    """Each command of a shell block as an argv list (continuations joined, comments and
    leading VAR=value assignments dropped, split at &&, ||, ;, |)."""
    commands = []
    for line in source.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        argv = []
        for token in [*lexer, ";"]:
            if token in SEPARATORS:
                while argv and re.fullmatch(r"\w+=.*", argv[0]):
                    argv.pop(0)
                commands += [argv] if argv else []
                argv = []
            else:
                argv.append(token)
    return commands


def _blocks(languages):
    return [pytest.param(line, source, id=f"README.md:{line}")
            for language, line, source in code_blocks(README.read_text())
            if language in languages]


def _long_options(args):
    return [arg.split("=")[0] for arg in args if arg.startswith("--")]


def _check_help(argv, options):
    """The command's ``--help`` (run from the checkout root) mentions every option used."""
    if not options:
        return
    result = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    missing = [option for option in options if option not in result.stdout]
    assert not missing, f"{shlex.join(argv)} --help does not list {missing}:\n{result.stdout}"


def _check_stseq(args):
    try:
        cli.build_parser().parse_args(args)
    except SystemExit as exit_:
        pytest.fail(f"`stseq {shlex.join(args)}` does not parse (exit {exit_.code})")


def _check_pytest(args):
    paths = [arg for arg in args if not arg.startswith("-")
             and ("/" in arg or arg.endswith(".py") or (ROOT / arg).is_dir())]
    for path in paths:
        assert (ROOT / path.split("::")[0]).exists(), f"pytest path {path} does not exist"
    _check_help([sys.executable, "-m", "pytest", *paths], _long_options(args))


def _check_python(args):
    if args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if module == "pytest":
            return _check_pytest(rest)
        if module == "stseq.cli":
            return _check_stseq(rest)
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        return _check_help([sys.executable, "-m", module], _long_options(rest))
    script, rest = args[0], args[1:]
    assert (ROOT / script).is_file(), f"no script {script}"
    _check_help([sys.executable, script], _long_options(rest))


def _check_pip(args):
    extras = pyproject = None
    for arg in args:
        match = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
        if match:
            pyproject = pyproject or tomllib.loads((ROOT / "pyproject.toml").read_text())
            extras = pyproject["project"]["optional-dependencies"]
            unknown = set(match.group(1).split(",")) - set(extras)
            assert not unknown, f"pip install {arg}: pyproject.toml has no extras {unknown}"


def _check_torchrun(args):
    assert "-m" in args, f"torchrun {shlex.join(args)}: only `-m MODULE` launches are checked"
    _check_python(args[args.index("-m"):])


def _check_command(argv):
    program, args = argv[0], argv[1:]
    checks = {"stseq": _check_stseq, "pytest": _check_pytest, "pip": _check_pip,
              "torchrun": _check_torchrun}
    if program in checks:
        return checks[program](args)
    if program in ("python", "python3"):
        return _check_python(args)
    if program in ("bash", "sh"):
        assert (ROOT / args[0]).is_file(), f"no script {args[0]}"
        return _check_help([program, args[0]], _long_options(args[1:]))
    assert program in ACCEPTED, (f"README command {shlex.join(argv)!r}: no check for "
                                 f"{program!r}; teach tests/test_readme.py one")


@pytest.mark.parametrize("line, source", _blocks(PYTHON_LANGUAGES))
def test_python_block_runs_on_its_own(line, source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = ast.increment_lineno(ast.parse(source), line - 1)  # tracebacks give README lines
    try:
        exec(compile(tree, str(README), "exec"), {"__name__": "__readme__"})
        return
    except Exception:  # noqa: BLE001  (any error of the block fails the test, compactly)
        failure = traceback.format_exc(limit=-4)
    pytest.fail(f"the block at README.md:{line} fails on its own:\n{failure}", pytrace=False)


@pytest.mark.parametrize("line, source", _blocks(SHELL_LANGUAGES))
def test_shell_block_commands_exist(line, source):
    commands = shell_commands(source)
    assert commands
    for argv in commands:
        _check_command(argv)


def test_blocks_are_found_and_commands_split():
    text = "x\n```python\na = 1\n```\n```bash\nA=1 stseq info && pytest tests -q  # c\n```\n"
    (python, _, code), (shell, line, commands) = code_blocks(text)
    assert (python, code, shell, line) == ("python", "a = 1\n", "bash", 6)
    assert shell_commands(commands) == [["stseq", "info"], ["pytest", "tests", "-q"]]
    assert shell_commands("stseq train --data x \\\n  --epochs 3\n") == [
        ["stseq", "train", "--data", "x", "--epochs", "3"]]
