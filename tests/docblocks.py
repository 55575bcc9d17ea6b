"""The commands and config snippets of README.md and docs/*.md, read the way a user reads them.

A command is a line of a ``sh``/``bash``/``shell`` code block, a ``$ `` line of a ``console`` block, or a
line of a bare block that starts like a command (``edge-tsm``, ``python -m edge``, ``pip install``, ...).
Comments (``# ...`` outside quotes) and blank lines are dropped, ``\\`` continuations joined, runs of
spaces outside quotes collapsed, and ``a && b`` / ``a ; b`` split into their commands (a pipeline
``a | b`` stays one command). tests/test_docs.py runs each one or lists it as skipped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_INFOS = {"sh", "bash", "shell", "console"}
COMMAND_STARTS = ("edge-tsm ", "python -m edge", "python3 -m edge", "pip install", "pip3 install", "sudo ",
                  "systemctl ", "python -c", "python3 -c")
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int                # 1-based line of the first line inside the fence
    info: str                # the fence's language ('' for a bare fence)
    lines: tuple[str, ...]   # the body, its common indentation removed

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file (nested fences in list items included)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).lower()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j].lstrip())
            j += 1
        out.append(Block(path, i + 2, info, tuple(body)))
        i = j + 1
    return out


def _scan(text: str) -> tuple[str, list[str]]:
    """``text`` without its comment and with spaces collapsed outside quotes; and its commands split at
    ``&&``, ``||`` and ``;`` outside quotes and ``$(...)``."""
    parts, cur, quote, depth, i = [], [], "", 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == "\\" and quote == '"' and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif text.startswith("$(", i):
            depth += 1
            cur.append("$(")
            i += 1
        elif c == ")" and depth:
            depth -= 1
            cur.append(c)
        elif c == "#" and (not cur or cur[-1] == " ") and not depth:
            break
        elif c.isspace():
            if cur and cur[-1] != " ":
                cur.append(" ")
        elif not depth and (text.startswith("&&", i) or text.startswith("||", i) or c == ";"):
            parts.append("".join(cur).strip())
            cur = []
            i += 1 if c == ";" else 2
            continue
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur).strip())
    return " ".join(p for p in parts if p), [p for p in parts if p]


def commands_of(block: Block) -> list[str]:
    """The commands of one block, in order (none for yaml, json, python, ... blocks)."""
    if block.info not in SHELL_INFOS and block.info != "":
        return []
    joined, pending = [], ""
    for raw in block.lines:
        line = raw.rstrip()
        if block.info == "console":
            if not (line.startswith("$ ") or pending):
                continue
            line = line[2:] if line.startswith("$ ") and not pending else line
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    if pending:
        joined.append(pending)
    out = []
    for line in joined:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if block.info == "" and not stripped.startswith(COMMAND_STARTS):
            continue
        out += _scan(stripped)[1]
    return out


def doc_commands(root: Path = ROOT) -> dict[str, list[str]]:
    """Every documented command -> where it is written (``FILE:LINE`` of its block), in doc order."""
    found: dict[str, list[str]] = {}
    for path in doc_files(root):
        for block in code_blocks(path):
            for cmd in commands_of(block):
                found.setdefault(cmd, []).append(block.where)
    return found


def blocks_of(info: str, root: Path = ROOT) -> list[Block]:
    return [b for p in doc_files(root) for b in code_blocks(p) if b.info == info]
