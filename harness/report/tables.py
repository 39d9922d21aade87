"""Report tables: a numeric frame (CSV) and a formatted frame (Markdown, LaTeX), plus cell formatting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

SHORT = {"ndcg@10": "N@10", "ndcg@20": "N@20", "recall@10": "R@10", "recall@20": "R@20"}
VARIANT_LABELS = {"base": "Base", "naive": "Naive", "rpe": "RPE", "erl": "+ERL", "prl": "+PRL",
                  "erl w/o KL": "ERL w/o KL", "prl w/o RCL": "PRL w/o RCL"}
VARIANT_ORDER = ["base", "naive", "rpe", "erl", "prl", "erl w/o KL", "prl w/o RCL"]


@dataclass
class Table:
    """``data`` is what the CSV holds (numbers); ``display`` what Markdown and LaTeX show (strings)."""

    name: str  # file stem
    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def fmt_number(x, digits: int = 4) -> str:
    return "–" if missing(x) else f"{x:.{digits}f}"


def fmt_mean_ci(mean, ci, digits: int = 4) -> str:
    """'0.0383' for one seed, '0.0383 ± 0.0012' for several."""
    if missing(mean):
        return "–"
    return f"{mean:.{digits}f}" if missing(ci) else f"{mean:.{digits}f} ± {ci:.{digits}f}"


def fmt_pct(x, marks: str = "", arrow: bool = True) -> str:
    if missing(x):
        return "–"
    sign = ("↑" if x >= 0 else "↓") if arrow else ""
    return f"{sign}{abs(x) if arrow else x:.2f}%{marks}"


def method_of(variant: str) -> str:
    """The paper's variant of a report variant: 'erl [formulation=released]' -> 'erl'."""
    return str(variant).partition(" [")[0]


def variant_label(variant: str) -> str:
    """'+ERL', or '+ERL [formulation=released]' when settings set the row apart from the defaults."""
    base, sep, rest = str(variant).partition(" [")
    return VARIANT_LABELS.get(base, base) + (f" [{rest}" if sep else "")


def variant_rank(variant: str) -> int:
    base = method_of(variant)
    return VARIANT_ORDER.index(base) if base in VARIANT_ORDER else len(VARIANT_ORDER)


def config_label(row, with_k: bool = True) -> str:
    """The paper's names of a configuration's method parameters, e.g. 'K=2, λ=0.05'."""
    parts = []
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)
    if with_k and not missing(get("reasoning_steps")) and get("reasoning_steps"):
        parts.append(f"K={int(get('reasoning_steps'))}")
    for name, symbol in (("kl_lambda", "λ"), ("tau", "τ"), ("alpha", "α")):
        value = get(name)
        if not missing(value):
            parts.append(f"{symbol}={value:g}")
    return ", ".join(parts) or "–"


# ------------------------------------------------------------------------------------------ writers
def to_markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_(no rows)_"
    cells = [[str(c) for c in frame.columns]] + [["" if missing(v) else str(v) for v in row]
                                                 for row in frame.itertuples(index=False)]
    cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "↑": r"$\uparrow$",
          "↓": r"$\downarrow$", "±": r"$\pm$", "†": r"$^\dagger$", "λ": r"$\lambda$", "τ": r"$\tau$",
          "α": r"$\alpha$", "–": "--", "≥": r"$\geq$", "×": r"$\times$"}


_LATEX_TABLE = str.maketrans(_LATEX)


def latex_escape(text: str) -> str:
    return str(text).translate(_LATEX_TABLE)


def to_latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs tabular inside a table float (needs \\usepackage{booktabs})."""
    cols = "l" * len(frame.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{tab:{label}}}", r"\small", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    for row in frame.itertuples(index=False):
        lines.append(" & ".join("" if missing(v) else latex_escape(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow's writer (pandas' float formatting is slow on large frames); lists as text."""
    import pyarrow as pa
    from pyarrow import csv

    frame = frame.copy()
    for col in [c for c in frame.columns if frame[c].dtype == "object"]:
        values = frame[col].dropna()
        if len(values) and not isinstance(values.iloc[0], str):  # DuckDB lists arrive as arrays
            frame[col] = frame[col].map(lambda v: None if missing(v) else v if isinstance(v, str) else
                                        "[" + ", ".join(str(x) for x in v) + "]")
    try:
        csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), str(path))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        frame.to_csv(path, index=False)


def write_table(table: Table, folder: Path) -> tuple[Path, Path]:
    """Write ``<name>.csv`` (numbers) and ``<name>.tex`` (formatted); returns both paths."""
    csv_path, tex_path = folder / f"{table.name}.csv", folder / f"{table.name}.tex"
    write_csv(table.data, csv_path)
    tex_path.write_text(to_latex(table.display, table.title, table.name), encoding="utf-8")
    return csv_path, tex_path


def table_markdown(table: Table) -> str:
    parts = [f"**{table.title}**", "", to_markdown(table.display)]
    for note in table.notes:  # one paragraph each
        parts += ["", note]
    parts += ["", f"Files: [`{table.name}.csv`]({table.name}.csv), [`{table.name}.tex`]({table.name}.tex)"]
    return "\n".join(parts)
