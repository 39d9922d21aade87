"""Report section: the paper's claims, one row each, with this study's figure and a verdict (report_claims)."""

from __future__ import annotations

import pandas as pd

from .context import Context, Section, absent
from .frames import ordered
from .tables import Table, missing, variant_label

VERDICT_MARK = {"reproduced": "✅ reproduced", "contradicted": "❌ contradicted", "inconclusive": "❔ inconclusive",
                "missing": "– missing"}
RULES = (
    "Verdicts: **reproduced** when the 95 % t-interval over seeds of this study's figure lies on the paper's side "
    "of the bound; **contradicted** when it lies entirely on the other side (it excludes the paper's direction); "
    "**inconclusive** when it spans the bound or fewer than two seeds give no interval; **missing** when the "
    "study lacks the row's data (the row says what it needs). Figures are per-seed quantities averaged over "
    "seeds: relative changes in % between two configurations trained with the same seed on the same data "
    "(Tables 2-3: the mean change over N@10, N@20, R@10, R@20), percentage points for Fig. 4's gain "
    "difference, the cached test-set latency increase for Table 4.",
    "Which variant: each row names the variant it is about with every setting that sets it apart from the "
    "defaults (formulation, KL sign, RCL similarity / negatives, item scoring, BERT4Rec objective / head, "
    "UniSRec text mode, training mode), compared "
    "with the reference of the same settings where the study has one; configurations are the ones chosen on "
    "validation at the claim's K (the paper's K = 2), never on test.",
    "The paper's own figures come from its Amazon 2023 and Yelp data (Tables 2-4, §4.3); on other data and at "
    "reduced size the check is about the direction of each claim, not its number.")


def _figure(row) -> str:
    if missing(row.mean):
        return "–"
    unit = " pp" if row.unit == "pp" else " %"
    ci = "" if missing(row.ci95) else f" ± {row.ci95:.2f}"
    return f"{row.mean:+.2f}{ci}{unit} (n={int(row.n)})"


def claims(ctx: Context) -> Section:
    key, title = "claims", "Claim check: the paper's claims, one verdict each"
    views = ["report_claims"]
    if "report_claims" not in ctx.views:
        return absent(key, title, "this database has no latency table yet", views)
    data = ctx.frame("report_claims")
    if data.empty:
        return absent(key, title, "no claims could be evaluated", views)
    data = ordered(data.sort_values("position", kind="stable"), {"dataset": ctx.order["dataset"]}).sort_values(
        "position", kind="stable")
    rows = []
    for r in data.itertuples(index=False):
        about = "–" if missing(r.variant) else variant_label(r.variant)
        if not missing(r.reference):  # a curve's reference is the pair of values compared
            about += f" ({r.reference})" if r.kind == "curve" else f" vs {variant_label(r.reference)}"
        bound = {">": "> ", ">=": "≥ ", "<=": "≤ "}[r.direction] + f"{r.bound:g}{' pp' if r.unit == 'pp' else ' %'}"
        rows.append({"Source": r.figure, "Claim": r.statement, "Dataset": "" if missing(r.dataset) else r.dataset,
                     "Backbone": r.backbone if not missing(r.backbone) else "", "Variant": about,
                     "Paper": r.paper, "Tested": bound, "This study": _figure(r),
                     "Verdict": VERDICT_MARK.get(r.verdict, r.verdict), "Note": "" if missing(r.why) else r.why})
    counts = data.verdict.value_counts()
    summary = ", ".join(f"{int(counts[v])} {v}" for v in VERDICT_MARK if v in counts)
    table = Table("table_claims", "The paper's claims against this study", data, pd.DataFrame(rows), list(RULES))
    return Section(key, title, True, [f"{len(data)} claim rows: {summary}.", ""], [table], views=views)
