"""The ``python`` code blocks of the README and docs/*.md, read at test time, so that the tests run the
examples exactly as a reader sees them (the project's rule: every snippet is executed by a test)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def python_blocks(path: Path, section: str | None = None) -> list[str]:
    """The ``python`` blocks of the markdown file ``path``, in order; with ``section``, only those under the
    heading ``section`` (of any level), up to the next heading of the same or a higher level. Lines inside
    code blocks (a Python comment) are never headings."""
    blocks: list[str] = []
    inside = section is None  # in the section
    level = 0
    fence: list[str] | None = None  # the lines of the python block being read
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("```"):
            if fence is not None:
                blocks.append("".join(fence))
                fence = None
            elif inside and line.strip() == "```python":
                fence = []
            in_code = not in_code
        elif fence is not None:
            fence.append(line)
        elif not in_code and section is not None and (heading := re.match(r"(#+) (.*)", line)):
            if inside and len(heading.group(1)) <= level:
                break
            if heading.group(2).strip() == section:
                inside, level = True, len(heading.group(1))
    where = path.name + (f" under {section!r}" if section else "")
    assert inside, f"no heading {section!r} in {path.name}"
    assert blocks, f"no python block in {where}"
    return blocks
