"""``mapd erd``: one entity-relationship diagram per schema."""

from __future__ import annotations

import shutil
from pathlib import Path

import datajoint as dj

from . import schemas

FORMATS = ("mermaid", "svg", "png")
SUFFIX = {"mermaid": ".mmd", "svg": ".svg", "png": ".png"}


class DiagramError(Exception):
    pass


def write_diagrams(out_dir: Path, fmt: str = "mermaid") -> list[Path]:
    """Write ``{schema}.{mmd|svg|png}`` for each MAP schema into ``out_dir``; the schemas must be active."""
    if fmt != "mermaid" and shutil.which("dot") is None:
        raise DiagramError(f"--format {fmt} needs Graphviz's `dot` program (e.g. apt-get install graphviz); "
                           "--format mermaid needs nothing")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, module in schemas.MODULES.items():
        path = out_dir / f"{name}{SUFFIX[fmt]}"
        dj.Diagram(module.schema).save(str(path), format=fmt)
        written.append(path)
    return written
