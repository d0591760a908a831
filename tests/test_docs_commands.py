"""Every command written in the README and in docs/ is a real command whose options parse.

Commands are read from the fenced ``bash`` blocks and the indented command lines of the pages;
continuation lines are joined, comments and ``VAR=value`` prefixes dropped. Each one is dry-run: its
command's ``main`` is called with its arguments, and parsing stops it (nothing is trained). Synopsis
lines (with ``[optional]`` parts or ``...``) describe a command's shape and are skipped. A YAML file
a command names must exist in the repository.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# how a documented command line starts -> the module whose main() runs it
SCRIPTS = {"train.py": "commands.train", "construct_mtl_mask.py": "commands.construct_mask",
           "mtl-train": "commands.train", "mtl-construct-mask": "commands.construct_mask",
           "mtl-compact": "commands.compact", "mtl-study": "experiments.run", "mtl-predict": "commands.predict",
           "mtl-export": "commands.export"}
NOT_OURS = ("pip", "export", "cd", "sha256sum", "tensorboard")


class Parsed(Exception):
    """Raised instead of running the command once its options have parsed."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def command_lines(text: str) -> list[str]:
    """Command lines of a page: fenced bash blocks and indented lines that start with a command."""
    out: list[str] = []
    in_bash = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_bash = line.strip() in ("```bash", "```sh", "```shell") and not in_bash
            continue
        indented = line.startswith("    ") and re.match(r"\s+(python|mtl-|torchrun|GLUE_DIR=)", line)
        if not (in_bash or indented or pending):
            continue
        stripped = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        full = (pending + stripped.strip()).strip()
        pending = ""
        if full:
            out.append(full)
    return out


def resolve(line: str) -> tuple[str, list[str]] | None:
    """(module, arguments) for one of our commands; None for a line that is not ours."""
    words = shlex.split(line)
    while words and re.match(r"^[A-Z_]+=", words[0]):  # GLUE_DIR=... prefixes
        words = words[1:]
    if not words or words[0] in NOT_OURS:
        return None
    if words[0] == "torchrun":
        script = next(i for i, w in enumerate(words) if w.endswith(".py"))
        words = ["python", *words[script:]]
    if words[0] in SCRIPTS:
        return SCRIPTS[words[0]], words[1:]
    if words[0] != "python":
        return None
    if words[1] == "-m":
        if words[2] == "pytest":
            return None
        return words[2], words[3:]
    return (SCRIPTS[words[1]], words[2:]) if words[1] in SCRIPTS else None


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for line in command_lines(page.read_text(encoding="utf-8")):
            if "[" in line or "..." in line:
                continue  # a synopsis, not a runnable command
            if resolve(line) is not None:
                found.append((page.name, line))
    return found


def test_the_pages_document_commands():
    pages = {page for page, _ in documented_commands()}
    assert {"README.md", "training.md", "tickets.md", "studies.md"} <= pages


def dry_run(line: str, monkeypatch) -> argparse.Namespace | int:
    """Parse ``line``'s options with its command's own parser and stop: the namespace, or the exit
    status when the command refused them."""
    module, args = resolve(line)
    main = importlib.import_module(module).main
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        try:
            return main(args)
        except Parsed as parsed:
            return parsed.namespace


@pytest.mark.parametrize("page,line", documented_commands())
def test_documented_command_parses(page, line, monkeypatch, capsys):
    result = dry_run(line, monkeypatch)
    assert isinstance(result, argparse.Namespace), f"{page}: `{line}` exit {result}: {capsys.readouterr().err}"
    for value in vars(result).values():
        if isinstance(value, (str, Path)) and str(value).endswith(".yaml") and str(value).startswith("experiments/"):
            assert (REPO / value).is_file(), f"{page}: `{line}` names {value}, which does not exist"


@pytest.mark.parametrize("line", ["python train.py --tasks rte --no-such-option 1",
                                  "python -m experiments.phase_transition --task rte --seeds",
                                  "mtl-compact --run runs/x"])
def test_a_wrong_command_does_not_parse(line, monkeypatch, capsys):
    assert dry_run(line, monkeypatch) == 2
    assert capsys.readouterr().err.startswith("error: ")
