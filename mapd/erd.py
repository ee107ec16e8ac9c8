"""``mapd erd``: one entity-relationship diagram per schema, with the tables of other schemas it depends on."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

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
        diagram = schema_diagram(module)
        if fmt == "png":
            path.write_bytes(diagram.make_png().getbuffer().tobytes())
        else:
            text = diagram.make_mermaid() if fmt == "mermaid" else diagram.make_svg().data
            path.write_text(text.rstrip("\n") + "\n")  # a text file ends with a newline
        written.append(path)
    return written


def schema_diagram(module) -> dj.Diagram:
    """The schema's tables and the tables of other schemas they reference, each group under its schema's name.

    The context is the schema modules by name, so tables are named as in
    ``mapd shell`` (``lab.Subject``); DataJoint's default, the caller's
    globals, would name them after whatever variable held the module.
    """
    diagram = dj.Diagram(module.schema, context=dict(schemas.MODULES))
    own = set(diagram.nodes_to_show)
    for parent in sorted({parent for table in own for parent in diagram.predecessors(table)} - own):
        diagram = diagram + SimpleNamespace(full_table_name=parent)  # DataJoint adds anything with this name
    return diagram
