"""A report as a list of blocks, rendered to Markdown or to a self-contained-looking HTML page."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def cell_text(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def text(self, text: str) -> None:
        self.blocks.append(("p", text))

    def image(self, file_name: str, caption: str) -> None:
        self.blocks.append(("img", (file_name, caption)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", (list(header), [[cell_text(c) for c in row] for row in rows])))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [value, ""]
            elif kind == "img":
                out += [f"![{value[1]}]({value[0]})", "", f"*{value[1]}*", ""]
            else:
                header, rows = value
                out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        return "\n".join(out)

    def html(self) -> str:
        esc = html.escape
        out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(self.title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
               "td,th{border:1px solid #ccc;padding:3px 8px}img{max-width:100%}</style></head><body>",
               f"<h1>{esc(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                out.append(f"<h2>{esc(value)}</h2>")
            elif kind == "p":
                out.append(f"<p>{esc(value)}</p>")
            elif kind == "img":
                out.append(f"<figure><img src='{esc(value[0])}'><figcaption>{esc(value[1])}</figcaption></figure>")
            else:
                header, rows = value
                out.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
                out.append("</table>")
        return "\n".join(out + ["</body></html>"])
