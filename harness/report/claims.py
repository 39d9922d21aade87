"""The paper's claims, one row each, and the SQL view that checks them against a study (`report_claims`).

Each claim is a directed statement about a per-seed quantity: a relative difference between two
configurations of the same dataset, backbone and seed (test metrics, or cached test-set latency), a
difference of subgroup gains, or a comparison along a sensitivity curve. The study's figure is the mean
over seeds with its 95 % t-interval; the verdict is

- reproduced: the interval lies on the paper's side of the bound (e.g. every plausible improvement > 0);
- contradicted: the interval lies entirely on the other side (it excludes the paper's direction);
- inconclusive: the interval spans the bound, or fewer than two seeds give no interval at all;
- missing: the study has no data for the row (the row says what it needs).

Configurations are the ones chosen on validation (report_best_by_k at the claim's K; the paper's K = 2),
compared per variant *with its settings*: an ERL row with ``[formulation=released]`` is a different claim
row from the paper formulation's, against the Base of the same settings where there is one. Paper figures
are quoted from the paper's text and tables (Tables 2-4 and §4.3); the paper's data are Amazon 2023 and
Yelp, so a study on other data checks the direction, not the number.
"""

from __future__ import annotations

from dataclasses import dataclass

from .variants import config_params_sql, extract_sql

METRICS_AVG = "avg"  # the mean relative change over NDCG@10/20 and Recall@10/20 (Tables 2-3's Avg.)


@dataclass(frozen=True)
class Claim:
    claim: str
    figure: str
    statement: str
    kind: str  # pair | groups | curve
    a: str  # the variant the claim is about (paper name)
    b: str | None  # its reference (pair), or None
    backbone: str | None  # None: every backbone of the study
    metric: str  # avg | ndcg@20 | latency
    a_source: str  # output | oracle | latency: what is measured on side a
    k_a: int
    k_b: int
    direction: str  # '>', '>=' or '<=' the bound
    bound: float
    unit: str  # '%' (relative change) or 'pp' (percentage points)
    paper: str  # the paper's own figure, quoted
    needs: str  # what a study must have for the row
    param: str | None = None  # curve: tau | alpha | kl_lambda
    endpoint: str | None = None  # curve: low | high (interior best vs that end) | top (best below the top)


_T23 = {  # Avg. improvement over Base (%): Video & Games, and the mean over the five datasets (Tables 2-3)
    ("sasrec", "erl"): (8.59, 6.76), ("sasrec", "prl"): (6.81, 8.21),
    ("bert4rec", "erl"): (5.36, 9.12), ("bert4rec", "prl"): (7.00, 7.28),
    ("unisrec", "erl"): (3.97, 12.29), ("unisrec", "prl"): (-0.08, 10.43),
    ("morec", "erl"): (7.76, 4.31), ("morec", "prl"): (2.64, 4.10),
}
_T4 = {"sasrec": 3.51, "bert4rec": 4.67, "unisrec": 2.74, "morec": 3.10}  # Table 4, Step-2 Cost Inc. (A100)
_NAMES = {"sasrec": "SASRec", "bert4rec": "BERT4Rec", "unisrec": "UniSRec", "morec": "MoRec", "erl": "ERL",
          "prl": "PRL"}


def _claims() -> list[Claim]:
    out = []
    for (bb, m), (vg, mean) in _T23.items():
        table = "Table 2" if bb in ("sasrec", "bert4rec") else "Table 3"
        out.append(Claim(f"t23_{bb}_{m}", table, f"{_NAMES[m]} improves {_NAMES[bb]} over its Base (Avg. of the "
                         "four metrics, K = 2)", "pair", m, "base", bb, METRICS_AVG, "output", 2, 0, ">", 0.0, "%",
                         f"Video & Games {vg:+.2f} %; five-dataset mean {mean:+.2f} %",
                         f"{_NAMES[bb]} Base and +{_NAMES[m]} at K = 2"))
    steps = "NDCG@20 at K = 2, SASRec (Fig. 5; values only in the figure)"
    out += [
        Claim("fig5_naive", "Fig. 5", "Naive ≤ Base", "pair", "naive", "base", "sasrec", "ndcg@20", "output", 2, 0,
              "<=", 0.0, "%", f"\"does not yield performance improvements and even underperforms\"; {steps}",
              "SASRec Base and Naive at K = 2"),
        Claim("fig5_rpe", "Fig. 5", "RPE > Base", "pair", "rpe", "base", "sasrec", "ndcg@20", "output", 2, 0,
              ">", 0.0, "%", f"\"yielding obvious performance gains\"; {steps}", "SASRec Base and RPE at K = 2"),
        Claim("fig5_erl", "Fig. 5", "ERL > RPE", "pair", "erl", "rpe", "sasrec", "ndcg@20", "output", 2, 2,
              ">", 0.0, "%", f"ERL/PRL \"significantly alleviate\" RPE's degradation; {steps}",
              "SASRec RPE and ERL at K = 2"),
        Claim("fig5_prl", "Fig. 5", "PRL > RPE", "pair", "prl", "rpe", "sasrec", "ndcg@20", "output", 2, 2,
              ">", 0.0, "%", f"ERL/PRL \"significantly alleviate\" RPE's degradation; {steps}",
              "SASRec RPE and PRL at K = 2"),
        Claim("fig7_erl", "Fig. 7", "ERL w/o KL < ERL", "pair", "erl", "erl w/o KL", "sasrec", "ndcg@20", "output",
              2, 2, ">", 0.0, "%", "\"ERL without KL regularization performs worse than the full model\" (NDCG@20)",
              "SASRec ERL (λ > 0) and ERL w/o KL (λ = 0) at K = 2"),
        Claim("fig7_prl", "Fig. 7", "PRL w/o RCL < PRL", "pair", "prl", "prl w/o RCL", "sasrec", "ndcg@20",
              "output", 2, 2, ">", 0.0, "%", "\"PRL without RCL also yields suboptimal\" performance (NDCG@20)",
              "SASRec PRL and PRL w/o RCL at K = 2"),
    ]
    for param, m, sym, quote in (("tau", "prl", "τ", "\"setting a moderate τ is crucial\" (grid 0.05-5)"),
                                 ("alpha", "prl", "α", "\"a moderate α usually achieves the best performance\" "
                                  "(grid 1-10)")):
        for end, word in (("low", "smallest"), ("high", "largest")):
            out.append(Claim(f"fig6_{param}_{end}", "Fig. 6", f"a moderate {sym} beats the {word} {sym} "
                             f"({_NAMES[m]}, NDCG@20)", "curve", m, None, "sasrec", "ndcg@20", "output", 2, 2, ">", 0.0,
                             "%", quote, f"SASRec +{_NAMES[m]} at K = 2 on ≥ 3 values of {sym}, the rest pinned",
                             param, end))
    out.append(Claim("fig6_lambda_top", "Fig. 6", "the largest λ is worse than the best smaller λ (ERL, NDCG@20)",
                     "curve", "erl", None, "sasrec", "ndcg@20", "output", 2, 2, ">", 0.0, "%",
                     "\"performance drops significantly when λ exceeds a certain threshold (e.g., 0.05)\" "
                     "(grid 0.001-0.1)", "SASRec +ERL at K = 2 on ≥ 2 values of λ > 0, the rest pinned",
                     "kl_lambda", "top"))
    out.append(Claim("fig4_items", "Fig. 4", "long-tail items gain most from reasoning: the Step-K over Step-0 "
                     "gain of IG0 (least popular) exceeds IG3's (PRL, NDCG@20)", "groups", "prl", None, "sasrec",
                     "ndcg@20", "output", 2, 2, ">", 0.0, "pp",
                     "IG-1 gains +12.08 / +16.35 / +18.69 % at Steps 1-3; popular groups decline (Yelp, K = 3)",
                     "SASRec +PRL with per-group metrics"))
    out.append(Claim("fig2_oracle", "Fig. 2", "the post-hoc oracle step raises NDCG@20 over Base by ≥ 30 % (PRL, "
                     "K = 2)", "pair", "prl", "base", "sasrec", "ndcg@20", "oracle", 2, 0, ">=", 30.0, "%",
                     "ceilings raised by \"approximately 30 %-50 %\" (Yelp, K = 2)",
                     "SASRec Base and +PRL at K = 2 with per-sample ranks"))
    for bb, pct in _T4.items():
        out.append(Claim(f"t4_{bb}", "Table 4", f"K = 2 costs at most +{pct} % test-set inference time over K = 0 "
                         f"({_NAMES[bb]}, PRL, KV cache)", "pair", "prl", "base", bb, "latency", "latency", 2, 0,
                         "<=", pct, "%", f"{_NAMES[bb]} Step-2 +{pct} % on one A100-40G",
                         f"{_NAMES[bb]} Base and +PRL at K = 2 with latency rows"))
    return out


CLAIMS = _claims()


def _q(text) -> str:
    return "NULL" if text is None else "'" + str(text).replace("'", "''") + "'"


def _claims_values() -> str:
    rows = []
    for i, c in enumerate(CLAIMS):
        rows.append(f"({i}, {_q(c.claim)}, {_q(c.figure)}, {_q(c.statement)}, {_q(c.kind)}, {_q(c.a)}, {_q(c.b)}, "
                    f"{_q(c.backbone)}, {_q(c.metric)}, {_q(c.a_source)}, {c.k_a}, {c.k_b}, {_q(c.direction)}, "
                    f"{float(c.bound)!r}, {_q(c.unit)}, {_q(c.paper)}, {_q(c.needs)}, {_q(c.param)}, "
                    f"{_q(c.endpoint)})")
    cols = ("position, claim, figure, statement, kind, a, b, backbone, metric, a_source, k_a, k_b, direction, "
            "bound, unit, paper, needs, param, endpoint")
    return f"(VALUES {', '.join(rows)}) AS c({cols})"


_PREFER = """(rb.model_setting = ra.model_setting) DESC, (rb.method_setting = ra.method_setting) DESC,
                     rb.model_setting = '' DESC, rb.method_setting = '' DESC, rb.variant"""

_SQL = f"""
        WITH claims AS (SELECT * FROM {_claims_values()}),
        vals AS (  -- per usable trial: test output metrics and cached test-set latency
            SELECT study, config_id, seed, dataset_hash, 'output' AS source, metric, value FROM report_test_values
            UNION ALL
            SELECT r.study, r.config_id, r.seed, r.dataset_hash, 'latency', 'latency', avg(l.seconds)
            FROM report_trials r JOIN latency l USING (trial_key)
            WHERE r.usable AND l.cached AND l.split = 'test' GROUP BY ALL),
        pairs AS (  -- side a chosen at K = k_a, its reference b at k_b (same settings preferred)
            SELECT c.claim, ra.study, ra.dataset, ra.backbone, ra.variant, rb.variant AS reference,
                   ra.config_id AS config_a, rb.config_id AS config_b, c.metric, c.a_source
            FROM claims c
            JOIN report_best_by_k ra ON ra.method_variant = c.a AND ra.reasoning_steps = c.k_a
                 AND (c.backbone IS NULL OR ra.backbone = c.backbone)
            JOIN report_best_by_k rb ON rb.study = ra.study AND rb.dataset = ra.dataset AND rb.backbone = ra.backbone
                 AND rb.method_variant = c.b AND rb.reasoning_steps = c.k_b
            WHERE c.kind = 'pair'
            QUALIFY row_number() OVER (PARTITION BY c.claim, ra.study, ra.dataset, ra.backbone, ra.variant
                                       ORDER BY {_PREFER}) = 1),
        oracle AS MATERIALIZED (  -- per trial of an oracle claim's side a: NDCG@20 of each sample's best step
            SELECT r.study, r.config_id, r.seed, r.dataset_hash, 'oracle' AS source, 'ndcg@20' AS metric,
                   avg(report_rank_metric(o.rank, 'ndcg@20')) AS value
            FROM (SELECT s.trial_key, min(s.rank) AS rank FROM sample_ranks s
                  WHERE s.split = 'test' AND s.step >= 0 AND s.trial_key IN (
                      SELECT r.trial_key FROM report_trials r JOIN pairs p ON p.study = r.study
                           AND p.config_a = r.config_id AND p.a_source = 'oracle' WHERE r.usable)
                  GROUP BY s.trial_key, s.sample) o
            JOIN report_trials r USING (trial_key) GROUP BY ALL),
        pair_seeds AS (
            SELECT p.claim, p.study, p.dataset, p.backbone, p.variant, p.reference, a.seed,
                   avg(100.0 * (a.value / nullif(b.value, 0) - 1)) AS value
            FROM pairs p
            JOIN (SELECT * FROM vals UNION ALL SELECT * FROM oracle) a ON a.study = p.study
                 AND a.config_id = p.config_a AND a.source = p.a_source AND (p.metric = 'avg' OR a.metric = p.metric)
            JOIN vals b ON b.study = p.study AND b.config_id = p.config_b AND b.seed = a.seed AND b.metric = a.metric
                 AND b.source = CASE p.a_source WHEN 'latency' THEN 'latency' ELSE 'output' END
                 AND b.dataset_hash IS NOT DISTINCT FROM a.dataset_hash
            WHERE p.metric <> 'avg' OR a.metric IN ('ndcg@10', 'ndcg@20', 'recall@10', 'recall@20')
            GROUP BY ALL),
        group_seeds AS (  -- Step-K over Step-0 gain of IG0 minus that of IG3, percentage points
            SELECT c.claim, b.study, b.dataset, b.backbone, b.variant, NULL AS reference, r.seed,
                   100.0 * (max(m.value) FILTER (m.step = b.reasoning_steps AND m.user_group = 'item:IG0')
                            / nullif(max(m.value) FILTER (m.step = 0 AND m.user_group = 'item:IG0'), 0)
                            - max(m.value) FILTER (m.step = b.reasoning_steps AND m.user_group = 'item:IG3')
                            / nullif(max(m.value) FILTER (m.step = 0 AND m.user_group = 'item:IG3'), 0)) AS value
            FROM claims c
            JOIN report_best b ON b.method_variant = c.a AND b.reasoning_steps >= 1
                 AND (c.backbone IS NULL OR b.backbone = c.backbone)
            JOIN report_trials r ON r.study = b.study AND r.config_id = b.config_id AND r.usable
            JOIN metrics m ON m.trial_key = r.trial_key AND m.split = 'test' AND m.metric = c.metric
                 AND m.user_group IN ('item:IG0', 'item:IG3') AND m.step IS NOT NULL
            WHERE c.kind = 'groups' GROUP BY ALL),
        keyed AS (  -- each usable trial of a curve claim: its configuration without the parameter (the curve
                    -- it lies on: every other setting equal) and the parameter's value
            SELECT DISTINCT c.claim, c.param, c.endpoint, c.metric, r.study, r.dataset, r.backbone, r.variant,
                   r.config_id, CAST(json_extract_string(t.params, '$.' || c.param) AS DOUBLE) AS value,
                   md5(CAST(json_merge_patch({config_params_sql("t.params", "t._v")},
                                             '{{"' || c.param || '": null}}') AS VARCHAR)) AS curve
            FROM claims c
            JOIN report_trials r ON r.method_variant = c.a AND r.reasoning_steps = c.k_a
                 AND (c.backbone IS NULL OR r.backbone = c.backbone)
            JOIN (SELECT trial_key, params, {extract_sql("params")} FROM trials) t ON t.trial_key = r.trial_key
            WHERE c.kind = 'curve' AND r.usable),
        curves AS (  -- per claim and variant, the curve with the most values (a one-at-a-time block's)
            SELECT claim, study, dataset, backbone, variant, curve, count(DISTINCT value) AS n_values
            FROM keyed GROUP BY claim, study, dataset, backbone, variant, curve
            QUALIFY row_number() OVER (PARTITION BY claim, study, dataset, backbone, variant
                                       ORDER BY n_values DESC, curve) = 1),
        points AS (
            SELECT DISTINCT k.claim, k.param, k.endpoint, k.metric, k.study, k.dataset, k.backbone, k.variant,
                   k.config_id, k.value, s.valid_score
            FROM keyed k JOIN curves USING (claim, study, dataset, backbone, variant, curve)
            JOIN report_scores s ON s.study = k.study AND s.config_id = k.config_id),
        ends AS (
            SELECT *, min(value) OVER g AS lo, max(value) OVER g AS hi FROM points
            WINDOW g AS (PARTITION BY claim, study, dataset, backbone, variant)),
        curve_pairs AS (  -- the best point on validation away from the end, against that end
            SELECT e.claim, e.param, e.study, e.dataset, e.backbone, e.variant, e.metric, e.config_id AS config_a,
                   t.config_id AS config_b, e.value AS value_a, t.value AS value_b
            FROM ends e JOIN ends t ON t.claim = e.claim AND t.study = e.study AND t.dataset = e.dataset
                 AND t.backbone = e.backbone AND t.variant = e.variant
                 AND t.value = CASE e.endpoint WHEN 'low' THEN e.lo ELSE e.hi END
            WHERE (e.endpoint IN ('low', 'high') AND e.value > e.lo AND e.value < e.hi)
               OR (e.endpoint = 'top' AND e.value < e.hi)
            QUALIFY row_number() OVER (PARTITION BY e.claim, e.study, e.dataset, e.backbone, e.variant
                                       ORDER BY e.valid_score DESC, e.value) = 1),
        curve_seeds AS (
            SELECT p.claim, p.study, p.dataset, p.backbone, p.variant,
                   CASE p.param WHEN 'tau' THEN 'τ' WHEN 'alpha' THEN 'α' ELSE 'λ' END AS sym,
                   sym || '=' || p.value_a || ' vs ' || sym || '=' || p.value_b AS reference, a.seed,
                   100.0 * (a.value / nullif(b.value, 0) - 1) AS value
            FROM curve_pairs p
            JOIN vals a ON a.study = p.study AND a.config_id = p.config_a AND a.source = 'output' AND a.metric = p.metric
            JOIN vals b ON b.study = p.study AND b.config_id = p.config_b AND b.source = 'output' AND b.metric = a.metric
                 AND b.seed = a.seed AND b.dataset_hash IS NOT DISTINCT FROM a.dataset_hash),
        seeds AS (SELECT * FROM pair_seeds UNION ALL BY NAME SELECT * FROM group_seeds
                  UNION ALL BY NAME SELECT * EXCLUDE (sym) FROM curve_seeds),
        agg AS (
            SELECT claim, study, dataset, backbone, variant, reference, count(value) AS n, avg(value) AS mean,
                   stddev_samp(value) AS sd, list(seed ORDER BY seed) AS seeds
            FROM seeds WHERE value IS NOT NULL GROUP BY ALL),
        rows AS (
            SELECT st.study, c.*, a.dataset, a.backbone AS row_backbone, a.variant, a.reference, a.n, a.mean,
                   report_ci95(a.sd, a.n) AS ci95, a.seeds
            FROM (SELECT study FROM studies) st CROSS JOIN claims c
            LEFT JOIN agg a ON a.study = st.study AND a.claim = c.claim)
        SELECT *, CASE WHEN verdict = 'missing' THEN 'missing: needs ' || needs
                       WHEN ci95 IS NULL THEN 'one seed: no confidence interval'
                       WHEN verdict = 'inconclusive' THEN 'the 95 % interval spans the bound' END AS why
        FROM (
            SELECT study, position, claim, figure, kind, statement, paper, dataset,
                   coalesce(row_backbone, backbone) AS backbone, variant, reference, unit, direction, bound, n, mean,
                   ci95, mean - ci95 AS lo, mean + ci95 AS hi, seeds, needs,
                   CASE WHEN n IS NULL THEN 'missing'
                        WHEN ci95 IS NULL THEN 'inconclusive'
                        WHEN direction = '>' AND mean - ci95 > bound THEN 'reproduced'
                        WHEN direction = '>' AND mean + ci95 <= bound THEN 'contradicted'
                        WHEN direction = '>=' AND mean - ci95 >= bound THEN 'reproduced'
                        WHEN direction = '>=' AND mean + ci95 < bound THEN 'contradicted'
                        WHEN direction = '<=' AND mean + ci95 <= bound THEN 'reproduced'
                        WHEN direction = '<=' AND mean - ci95 > bound THEN 'contradicted'
                        ELSE 'inconclusive' END AS verdict
            FROM rows)"""

CLAIM_VIEWS: dict[str, tuple[str, str]] = {
    "report_test_values": ("per usable trial, the test metrics of the method's own output on all users (the "
                           "per-seed values the claims pair)", """
        SELECT r.study, r.trial_key, r.config_id, r.seed, r.dataset_hash, m.metric, m.value
        FROM report_trials r JOIN metrics m USING (trial_key)
        WHERE r.usable AND m.split = 'test' AND m.step IS NULL AND m.user_group = 'all'"""),
    "report_claims": ("each claim of the paper as a row per study (and per dataset, backbone and variant where "
                      "the study has them): the paper's figure, this study's mean and 95 % CI over seeds of the "
                      "per-seed quantity, and the verdict (reproduced / contradicted / inconclusive / missing)", _SQL),
}
CLAIM_NEEDS = {"report_claims": "latency"}
