"""No stale signs: every pointer in code and docs resolves, test modules share helpers only through
conftest fixtures, and each method's traits are declared once (rearec.config.METHOD_TRAITS)."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

from harness.report.views import ABLATION_PAIRS, VIEWS, create_views
from harness.store import variant
from rearec.config import BACKBONES, METHOD_TRAITS, METHODS, MethodConfig

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
SOURCES = sorted([*(ROOT / "rearec").rglob("*.py"), *(ROOT / "harness").rglob("*.py"),
                  *(ROOT / "bench").glob("*.py"), *TESTS.glob("*.py")])
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", ROOT / "studies" / "README.md"]


# ------------------------------------------------------------------------------------- pointers
def test_no_pointer_leaves_the_repository_for_the_released_code_notes():
    stale = [str(p.relative_to(ROOT)) for p in [*SOURCES, *DOCS]
             if "official-code" in p.read_text() and p.name != "test_repo_hygiene.py"]
    assert stale == []


def test_every_cited_section_of_released_code_md_exists():
    headings = [line[3:] for line in (ROOT / "docs/released-code.md").read_text().splitlines()
                if line.startswith("## ")]
    cited = {(str(p.relative_to(ROOT)), m) for p in [*SOURCES, *DOCS]
             for m in re.findall(r'docs/released-code\.md,\s*"([^"]+)"', p.read_text())}
    # rearec/model.py, config.py, objectives.py, data/preprocess.py, data/spec.py, bench/peer_reference.py
    assert len(cited) >= 6
    missing = [(path, s) for path, s in cited if not any(h.startswith(s) for h in headings)]
    assert missing == []


def test_every_benchmark_named_in_code_and_docs_exists():
    named = {m for p in [*SOURCES, *DOCS] for m in re.findall(r"\bbench/\w+\.py", p.read_text())}
    assert "bench/bench_training_modes.py" in named  # rearec/packing.py's pointer
    assert sorted(n for n in named if not (ROOT / n).exists()) == []


def test_every_report_view_named_in_the_report_code_and_readme_exists(report_db):
    with report_db.connect() as con:
        create_views(con)
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        macros = {r[0] for r in con.execute("SELECT function_name FROM duckdb_functions()").fetchall()}
    files = [*(ROOT / "harness" / "report").glob("*.py"), ROOT / "README.md"]
    named = {m for p in files for m in re.findall(r"\breport_\w+", p.read_text())}
    assert {"report_trials", "report_best_results", "report_adaptive", "report_ci95"} <= named
    assert set(VIEWS) <= views
    assert sorted(named - views - macros) == []


def test_the_studies_readme_lists_every_study_file_and_backbone():
    text = (ROOT / "studies" / "README.md").read_text()
    table = set(re.findall(r"^\| `(\w+\.yaml)` \|", text, re.M))
    assert table == {p.name for p in (ROOT / "studies").glob("*.yaml")}
    backbones_line = next(line for line in text.splitlines() if line.startswith("backbones:"))
    assert BACKBONES == ("sasrec", "bert4rec", "unisrec", "morec")
    assert [b for b in BACKBONES if re.search(rf"\b{b}\b", backbones_line) is None] == []


# ------------------------------------------------------------------------------------- test modules
def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_test_module_imports_another_or_edits_sys_path():
    local = {p.stem for p in TESTS.glob("*.py")} | {"tiny", "tests"}
    modules = [p for p in TESTS.glob("test_*.py")]
    assert len(modules) > 30
    imports = {p.name: sorted(_imports(p) & local) for p in modules}
    assert {name: found for name, found in imports.items() if found} == {}
    edits = [p.name for p in [*modules, TESTS / "conftest.py"]
             if "sys.path." + "insert" in p.read_text() or "sys.path." + "append" in p.read_text()]
    assert edits == []
    assert not (TESTS / "tiny.py").exists()


def test_the_tiny_study_fixture_gives_fresh_copies(tiny_study, tiny_params, tiny_dataset):
    a, b = tiny_study(name="a"), tiny_study()
    a["params"]["hidden_size"] = 99
    assert b["params"]["hidden_size"] == 16 and tiny_study()["params"] == tiny_params
    assert (a["name"], b["name"], b["seeds"], b["methods"]) == ("a", "tiny", [0], ["base", {"name": "erl",
                                                                                           "reasoning_steps": 1}])
    assert tiny_dataset == {"name": "synthetic", "synthetic": {"n_users": 150, "n_items": 100, "n_topics": 8}}


# ------------------------------------------------------------------------------------- method traits
def test_every_method_has_its_traits_declared_once():
    assert METHODS == tuple(METHOD_TRAITS) == ("base", "naive", "rpe", "erl", "prl")
    assert typing.get_args(typing.get_type_hints(MethodConfig)["name"]) == METHODS
    readout = {n: t.readout for n, t in METHOD_TRAITS.items()}
    assert readout == {"base": "last", "naive": "last", "rpe": "last", "erl": "mean", "prl": "last"}
    assert [n for n, t in METHOD_TRAITS.items() if not t.uses_rpe] == ["naive"]
    assert [n for n, t in METHOD_TRAITS.items() if t.uses_noise or t.uses_warmup] == ["prl"]
    assert {n: t.params for n, t in METHOD_TRAITS.items() if t.params} == {
        "erl": ("kl_lambda",), "prl": ("tau", "alpha", "gamma")}
    assert {n: t.loss for n, t in METHOD_TRAITS.items()} == {
        "base": "ce", "naive": "ce", "rpe": "ce", "erl": "erl", "prl": "prl"}
    for traits in METHOD_TRAITS.values():
        if traits.ablation is not None:  # the ablation field is a MethodConfig field
            assert traits.ablation.field in MethodConfig.__dataclass_fields__


@pytest.mark.parametrize("method, name", [
    ({"name": "erl", "kl_lambda": 0.0}, "erl w/o KL"), ({"name": "erl", "kl_lambda": 0.05}, "erl"),
    ({"name": "erl"}, "erl"),  # a missing field has MethodConfig's default (0.05)
    ({"name": "prl", "rcl": False}, "prl w/o RCL"), ({"name": "prl", "rcl": True}, "prl"), ({"name": "prl"}, "prl"),
    ({"name": "naive", "kl_lambda": 0.0}, "naive"), ({"name": "unknown"}, "unknown"),
])
def test_the_store_names_variants_from_the_table(method, name):
    assert variant(method) == name


def test_the_views_compare_each_method_with_the_ablation_the_table_names():
    assert ABLATION_PAIRS == "('erl', 'erl w/o KL'), ('prl', 'prl w/o RCL')"
    ablated = {n: variant({"name": n, t.ablation.field: False}) for n, t in METHOD_TRAITS.items() if t.ablation}
    assert ABLATION_PAIRS == ", ".join(f"('{n}', '{v}')" for n, v in ablated.items())
    assert f"IN ({ABLATION_PAIRS})" in VIEWS["report_comparisons"][1]
