"""SQL views (and the macros in MACROS) the reports are built from, created idempotently in the results
database.

Every number in a report comes from these views, so `harness sql "SELECT * FROM report_best_results WHERE
study = 'overall'"` shows what the report shows. Conventions: `step IS NULL` is the method's own output
(mean-pooled states for ERL, the last step otherwise), steps 0..K are the individual reasoning steps;
`user_group = 'all'` is the whole split. A "configuration" (`config_id`) is a trial's resolved settings
without the seed (and without file locations, speed-only settings and settings at their legacy value:
harness/report/variants.py), so the trials of one configuration are its seeds. `variant` names the paper's
variant plus every setting that sets it apart from the defaults (`erl [formulation=released]`);
`method_variant` is the paper's name alone. Selection uses the study's
`selection.metric` on the validation split only: no view that chooses a configuration reads test rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from rearec.config import METHOD_TRAITS, METRICS

from .adaptive_fast import fetch_signals, seeds_rows
from .adaptive_views import ADAPTIVE_NEEDS, ADAPTIVE_VIEWS
from .claims import CLAIM_NEEDS, CLAIM_VIEWS
from .variants import config_params_sql, extract_sql, label_sql, settings_sql

METRIC_LIST = ", ".join(f"'{m}'" for m in METRICS)


def _col(prefix: str, metric: str) -> str:
    return f'"{prefix}{metric}"'


def _columns(template: str, prefix: str = "") -> str:
    """One column per paper metric: ``template`` with {m} = the metric, named ``<prefix><metric>``."""
    return ", ".join(f"{template.format(m=m)} AS {_col(prefix, m)}" for m in METRICS)


def _names() -> str:
    return ", ".join(_col("", m) for m in METRICS)


def _pairs(a: str, b: str) -> str:
    """UNPIVOT column pairs: (<a>metric, <b>metric) AS "metric"."""
    return ", ".join(f"({_col(a, m)}, {_col(b, m)}) AS \"{m}\"" for m in METRICS)
# Two-sided 95 % t quantiles t(0.975, df) for df = 1..100 (scipy.stats.t.ppf); beyond, the Cornish-Fisher
# expansion (absolute error < 3e-6) keeps the macro a pure SQL expression.
_T975 = [
         12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252, 2.306004135, 2.262157163,
         2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546, 2.119905299, 2.109815578, 2.100922040,
         2.093024054, 2.085963447, 2.079613845, 2.073873068, 2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516,
         2.048407142, 2.045229642, 2.042272456, 2.039513446, 2.036933343, 2.034515297, 2.032244509, 2.030107928, 2.028094001,
         2.026192463, 2.024394164, 2.022690920, 2.021075390, 2.019540970, 2.018081703, 2.016692199, 2.015367574, 2.014103389,
         2.012895599, 2.011740514, 2.010634758, 2.009575237, 2.008559112, 2.007583770, 2.006646805, 2.005745995, 2.004879288,
         2.004044783, 2.003240719, 2.002465459, 2.001717484, 2.000995378, 2.000297822, 1.999623585, 1.998971517, 1.998340543,
         1.997729654, 1.997137908, 1.996564419, 1.996008354, 1.995468931, 1.994945415, 1.994437112, 1.993943368, 1.993463567,
         1.992997126, 1.992543495, 1.992102154, 1.991672610, 1.991254395, 1.990847069, 1.990450210, 1.990063421, 1.989686323,
         1.989318557, 1.988959780, 1.988609667, 1.988267907, 1.987934206, 1.987608282, 1.987289865, 1.986978700, 1.986674541,
         1.986377154, 1.986086317, 1.985801814, 1.985523442, 1.985251004, 1.984984312, 1.984723186, 1.984467455, 1.984216952,
         1.983971519]
_Z = 1.959963984540054

MACROS = {
    "report_t975": f"""CREATE OR REPLACE MACRO report_t975(df) AS CASE
        WHEN df IS NULL OR df < 1 THEN NULL
        WHEN df <= {len(_T975)} THEN {_T975}[CAST(df AS INTEGER)]
        ELSE {_Z} + ({_Z}^3 + {_Z}) / (4.0 * df) + (5 * {_Z}^5 + 16 * {_Z}^3 + 3 * {_Z}) / (96.0 * df * df) END""",
    "report_ci95": """CREATE OR REPLACE MACRO report_ci95(sd, n) AS
        CASE WHEN n >= 2 THEN report_t975(n - 1) * sd / sqrt(n) END""",
    "report_rank_metric": """CREATE OR REPLACE MACRO report_rank_metric(rank, metric) AS CASE
        WHEN rank > CAST(split_part(metric, '@', 2) AS INTEGER) THEN 0.0
        WHEN starts_with(metric, 'ndcg') THEN 1.0 / log2(rank + 1.0)
        WHEN starts_with(metric, 'recall') THEN 1.0 END""",
}

_BEST = """SELECT *, count(*) OVER (PARTITION BY {keys}) AS n_candidates FROM report_scores
    QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY valid_score DESC, n_seeds DESC, config_id) = 1"""
_VARIANT = "study, dataset, backbone, variant"
# (full method, its ablation) pairs of METHOD_TRAITS as SQL tuples: ('erl', 'erl w/o KL'), ('prl', 'prl w/o RCL')
ABLATION_PAIRS = ", ".join(f"('{name}', '{name} {t.ablation.label}')"
                           for name, t in METHOD_TRAITS.items() if t.ablation is not None)

# name -> (what it holds, SELECT). Order matters: later views read earlier ones.
VIEWS: dict[str, tuple[str, str]] = {
    "report_trials": ("every trial linked to a study, with status 'pending' for planned trials not started yet, "
                      "config_id (the settings without the seed) and usable (completed and not stopped early by "
                      "ASHA: the trials every other view reads)", f"""
        SELECT st.study, st.trial_key, coalesce(t.status, 'pending') AS status, t.dataset, t.backbone, t.method,
               t.variant || CASE WHEN t.settings <> '' THEN ' [' || t.settings || ']' ELSE '' END AS variant,
               t.reasoning_steps, t.kl_lambda, t.tau, t.alpha, t.gamma, t.seed, t.error, t.pruned,
               t.status = 'completed' AND NOT coalesce(t.pruned, FALSE) AS usable, t.finished_at, t.dataset_hash,
               md5(CAST({config_params_sql("t.params")} AS VARCHAR)) AS config_id,
               t.variant AS method_variant, t.method_setting, t.model_setting
        FROM study_trials st LEFT JOIN (
            SELECT *, concat_ws(', ', nullif(method_setting, ''), nullif(model_setting, '')) AS settings FROM (
                SELECT *, {label_sql("method")} AS method_setting, {label_sql("model")} AS model_setting
                FROM (SELECT *, {settings_sql()} FROM (SELECT *, {extract_sql()} FROM trials)))) t
             USING (trial_key)"""),
    "report_metrics": ("metric rows of the usable trials of each study, with the trial's identity", """
        SELECT r.study, r.trial_key, r.config_id, r.dataset, r.backbone, r.variant, r.reasoning_steps, r.kl_lambda,
               r.tau, r.alpha, r.gamma, r.seed, r.dataset_hash, m.split, m.step, m.user_group, m.metric, m.value,
               r.method_variant, r.method_setting, r.model_setting
        FROM report_trials r JOIN metrics m USING (trial_key) WHERE r.usable"""),
    "report_configs": ("per configuration, split and metric of the method's output on all users: seeds n, mean, "
                       "sd and the 95 % t confidence half-width ci95", """
        SELECT *, report_ci95(sd, n) AS ci95 FROM (
            SELECT study, dataset, backbone, variant, reasoning_steps, config_id, kl_lambda, tau, alpha, gamma,
                   split, metric, count(*) AS n, avg(value) AS mean, stddev_samp(value) AS sd,
                   list(seed ORDER BY seed) AS seeds, method_variant, method_setting, model_setting
            FROM report_metrics WHERE step IS NULL AND user_group = 'all'
            GROUP BY ALL)"""),
    "report_selection_metric": ("each study's selection metric (validation)", """
        SELECT study, coalesce(regexp_replace(definition->>'$.selection.metric', '^valid/', ''), 'ndcg@20')
               AS metric
        FROM studies"""),
    "report_scores": ("every configuration's validation score on the study's selection metric (the only input "
                      "of model selection; test never enters)", """
        SELECT c.study, c.dataset, c.backbone, c.variant, c.reasoning_steps, c.config_id, c.kl_lambda, c.tau,
               c.alpha, c.gamma, c.metric AS selection_metric, c.mean AS valid_score, c.n AS n_seeds,
               c.method_variant, c.method_setting, c.model_setting
        FROM report_configs c JOIN report_selection_metric s ON s.study = c.study AND s.metric = c.metric
        WHERE c.split = 'valid'"""),
    "report_best": ("the configuration chosen on validation per study, dataset, backbone and variant (any K)",
                    _BEST.format(keys=_VARIANT)),
    "report_best_by_k": ("the configuration chosen on validation per study, dataset, backbone, variant and K",
                         _BEST.format(keys=_VARIANT + ", reasoning_steps")),
    "report_best_results": ("test metrics (mean, ci95 over seeds) of the configurations in report_best", """
        SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, b.config_id, b.kl_lambda, b.tau,
               b.alpha, b.gamma, b.valid_score, b.n_candidates, c.metric, c.n, c.mean, c.sd, c.ci95, c.seeds
        FROM report_best b JOIN report_configs c USING (study, config_id) WHERE c.split = 'test'"""),
    "report_steps": ("test metrics of the configurations in report_best_by_k (Fig. 5: metric against K)", """
        SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, b.config_id, b.valid_score,
               b.n_candidates, c.metric, c.n, c.mean, c.sd, c.ci95
        FROM report_best_by_k b JOIN report_configs c USING (study, config_id) WHERE c.split = 'test'"""),
    "report_comparisons": ("which variant is compared with which: every variant with a Base, the full ERL / PRL "
                           "with their ablations; among references of the same kind, the one with the same "
                           "model settings (training, scoring, ...) and then the same method settings wins", f"""
        SELECT b.study, b.dataset, b.backbone, b.variant, r.variant AS reference
        FROM report_best b JOIN report_best r USING (study, dataset, backbone)
        WHERE (r.method_variant = 'base' AND b.method_variant <> 'base')
           OR (b.method_variant, r.method_variant) IN ({ABLATION_PAIRS})
        QUALIFY row_number() OVER (
            PARTITION BY b.study, b.dataset, b.backbone, b.variant, r.method_variant
            ORDER BY (r.model_setting = b.model_setting) DESC, (r.method_setting = b.method_setting) DESC,
                     r.model_setting = '' DESC, r.method_setting = '' DESC, r.variant) = 1"""),
    "report_improvements": ("test metric of a variant against its reference, relative improvement in % and the "
                            "average improvement over the four metrics (Tables 2-3's Avg.)", f"""
        SELECT *, avg(improvement_pct) FILTER (WHERE metric IN ({METRIC_LIST}))
                  OVER (PARTITION BY study, dataset, backbone, variant, reference) AS avg_improvement_pct
        FROM (SELECT c.study, c.dataset, c.backbone, c.variant, c.reference, m.metric, m.n, m.mean, m.ci95,
                     r.n AS reference_n, r.mean AS reference_mean, r.ci95 AS reference_ci95,
                     100.0 * (m.mean - r.mean) / nullif(r.mean, 0) AS improvement_pct
              FROM report_comparisons c
              JOIN report_best_results m ON m.study = c.study AND m.dataset = c.dataset
                   AND m.backbone = c.backbone AND m.variant = c.variant
              JOIN report_best_results r ON r.study = c.study AND r.dataset = c.dataset
                   AND r.backbone = c.backbone AND r.variant = c.reference AND r.metric = m.metric)"""),
    "report_seed_pairs": ("per-seed test values of a variant and its reference (same seed, same data)", """
        SELECT c.study, c.dataset, c.backbone, c.variant, c.reference, a.metric, a.seed, a.value,
               b.value AS reference_value, a.value - b.value AS diff
        FROM report_comparisons c
        JOIN report_best bv ON bv.study = c.study AND bv.dataset = c.dataset AND bv.backbone = c.backbone
             AND bv.variant = c.variant
        JOIN report_best br ON br.study = c.study AND br.dataset = c.dataset AND br.backbone = c.backbone
             AND br.variant = c.reference
        JOIN report_metrics a ON a.study = c.study AND a.config_id = bv.config_id
        JOIN report_metrics b ON b.study = c.study AND b.config_id = br.config_id AND b.seed = a.seed
             AND b.metric = a.metric AND b.split = a.split AND b.step IS NULL AND b.user_group = 'all'
             AND b.dataset_hash IS NOT DISTINCT FROM a.dataset_hash
        WHERE a.split = 'test' AND a.step IS NULL AND a.user_group = 'all'"""),
    "report_seed_tests": ("aggregates of the paired t-test over seeds: n_pairs, mean_diff, sd_diff", """
        SELECT study, dataset, backbone, variant, reference, metric, count(*) AS n_pairs, avg(diff) AS mean_diff,
               stddev_samp(diff) AS sd_diff
        FROM report_seed_pairs GROUP BY ALL"""),
    "report_output_ranks": ("per-sample 1-based target ranks of each usable trial's own output", """
        SELECT r.study, r.trial_key, r.config_id, r.seed, r.dataset_hash, s.split, s.sample, s.rank
        FROM report_trials r JOIN sample_ranks s USING (trial_key)
        WHERE r.usable AND (s.step IS NULL OR s.step < 0)"""),
    "report_sample_tests": ("aggregates of the paired t-test over test samples: per-sample metric differences "
                            "(each averaged over the seeds both sides have), n_samples, mean_diff, sd_diff", f"""
        WITH sides AS (  -- one integer id per comparison: the heavy joins and groupings below use integers
            SELECT c.study, c.dataset, c.backbone, c.variant, c.reference, bv.config_id AS config_a,
                   br.config_id AS config_b,
                   row_number() OVER (ORDER BY c.study, c.dataset, c.backbone, c.variant, c.reference) AS c
            FROM report_comparisons c
            JOIN report_best bv ON bv.study = c.study AND bv.dataset = c.dataset AND bv.backbone = c.backbone
                 AND bv.variant = c.variant
            JOIN report_best br ON br.study = c.study AND br.dataset = c.dataset AND br.backbone = c.backbone
                 AND br.variant = c.reference),
        trial_pairs AS (  -- the two sides' trials with the same seed and data
            SELECT s.c, a.trial_key AS key_a, b.trial_key AS key_b
            FROM sides s
            JOIN report_trials a ON a.study = s.study AND a.config_id = s.config_a AND a.usable
            JOIN report_trials b ON b.study = s.study AND b.config_id = s.config_b AND b.usable AND b.seed = a.seed
                 AND b.dataset_hash IS NOT DISTINCT FROM a.dataset_hash),
        keys AS (SELECT key, row_number() OVER (ORDER BY key) AS t FROM (SELECT key_a AS key FROM trial_pairs UNION
                                                             SELECT key_b FROM trial_pairs)),
        ranks AS MATERIALIZED (  -- one scan of sample_ranks: the output's test ranks of these trials
            SELECT k.t, r.sample, r.rank FROM sample_ranks r JOIN keys k ON k.key = r.trial_key
            WHERE r.split = 'test' AND (r.step IS NULL OR r.step < 0)),
        per_sample AS (
            SELECT p.c, a.sample, count(*) AS n_seeds,
                   {_columns("avg(report_rank_metric(a.rank, '{m}') - report_rank_metric(b.rank, '{m}'))")}
            FROM trial_pairs p
            JOIN keys ka ON ka.key = p.key_a JOIN keys kb ON kb.key = p.key_b
            JOIN ranks a ON a.t = ka.t JOIN ranks b ON b.t = kb.t AND b.sample = a.sample
            GROUP BY p.c, a.sample),
        tests AS (
            SELECT c, metric, count(*) AS n_samples, max(n_seeds) AS n_seeds, avg(diff) AS mean_diff,
                   stddev_samp(diff) AS sd_diff
            FROM (UNPIVOT per_sample ON {_names()} INTO NAME metric VALUE diff) GROUP BY c, metric)
        SELECT s.study, s.dataset, s.backbone, s.variant, s.reference, t.metric, t.n_samples, t.n_seeds,
               t.mean_diff, t.sd_diff
        FROM tests t JOIN sides s USING (c)"""),
    "report_subgroups": ("test metrics per reasoning step (NULL = output) and user / item group of the "
                         "configurations in report_best (Fig. 4)", """
        SELECT *, report_ci95(sd, n) AS ci95 FROM (
            SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, b.config_id, m.step, m.user_group,
                   m.metric, count(*) AS n, avg(m.value) AS mean, stddev_samp(m.value) AS sd
            FROM report_best b JOIN report_metrics m ON m.study = b.study AND m.config_id = b.config_id
            WHERE m.split = 'test' GROUP BY ALL)"""),
    "report_oracle": ("test metrics of the method's output and of the post-hoc oracle that takes each sample's "
                      "best step 0..K, for the configurations in report_best (Fig. 2)", f"""
        WITH best AS (  -- one integer id per trial: the per-sample grouping below uses integers
            SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, r.seed, r.trial_key,
                   row_number() OVER (ORDER BY r.trial_key) AS t
            FROM report_best b
            JOIN report_trials r ON r.study = b.study AND r.config_id = b.config_id AND r.usable),
        per_sample AS (
            SELECT b.t, s.sample,
                   min(s.rank) FILTER (WHERE s.step >= 0) AS oracle_rank,
                   min(s.rank) FILTER (WHERE s.step IS NULL OR s.step < 0) AS output_rank
            FROM best b JOIN sample_ranks s ON s.trial_key = b.trial_key AND s.split = 'test'
            GROUP BY b.t, s.sample),
        per_seed AS (
            SELECT t, count(*) AS n_samples,
                   {_columns("avg(report_rank_metric(output_rank, '{m}'))", "out_")},
                   {_columns("avg(report_rank_metric(oracle_rank, '{m}'))", "oracle_")}
            FROM per_sample GROUP BY t)
        SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, u.metric, count(*) AS n,
               min(u.n_samples) AS n_samples, avg(u.output_value) AS output_mean,
               report_ci95(stddev_samp(u.output_value), count(*)) AS output_ci95, avg(u.oracle_value) AS oracle_mean,
               report_ci95(stddev_samp(u.oracle_value), count(*)) AS oracle_ci95
        FROM (UNPIVOT per_seed ON {_pairs("out_", "oracle_")} INTO NAME metric VALUE output_value, oracle_value) u
        JOIN best b USING (t)
        GROUP BY ALL"""),
    "report_oracle_steps": ("share of test samples whose best step is k (ties: the earliest step), pooled over "
                            "seeds, for the configurations in report_best", """
        WITH best AS (
            SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, r.trial_key,
                   row_number() OVER (ORDER BY r.trial_key) AS t
            FROM report_best b
            JOIN report_trials r ON r.study = b.study AND r.config_id = b.config_id AND r.usable),
        per_sample AS (
            SELECT b.t, arg_min(s.step, s.rank * 1024 + s.step) AS step
            FROM best b JOIN sample_ranks s ON s.trial_key = b.trial_key AND s.split = 'test' AND s.step >= 0
            GROUP BY b.t, s.sample),
        counts AS (
            SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, p.step, count(*) AS n_samples
            FROM per_sample p JOIN best b USING (t) GROUP BY ALL)
        SELECT *, n_samples / sum(n_samples) OVER (PARTITION BY study, dataset, backbone, variant) AS share
        FROM counts"""),
    "report_similarity": ("mean cosine similarity between the reasoning steps' hidden states (test split), over the "
                          "seeds of the configurations in report_best (Fig. 9)", """
        SELECT b.study, b.dataset, b.backbone, b.variant, b.reasoning_steps, s.split, s.step_a, s.step_b,
               count(*) AS n, avg(s.cosine) AS cosine
        FROM report_best b
        JOIN report_trials r ON r.study = b.study AND r.config_id = b.config_id AND r.usable
        JOIN step_similarity s ON s.trial_key = r.trial_key
        GROUP BY ALL"""),
    "report_latency": ("inference seconds per dataset, backbone, variant, K and KV-cache setting (mean over the "
                       "completed trials) and the cost increase in % over K = 0 (Table 4)", """
        WITH per AS (
            SELECT r.study, r.dataset, r.backbone, r.variant, r.reasoning_steps, l.split, l.cached, count(*) AS n,
                   avg(l.seconds) AS seconds, stddev_samp(l.seconds) AS sd, max(l.rows) AS rows
            FROM report_trials r JOIN latency l USING (trial_key) WHERE r.usable GROUP BY ALL),
        base AS (
            SELECT study, dataset, backbone, split, cached, avg(seconds) AS seconds
            FROM per WHERE reasoning_steps = 0 GROUP BY ALL)
        SELECT p.*, report_ci95(p.sd, p.n) AS ci95, 100.0 * (p.seconds / nullif(b.seconds, 0) - 1) AS cost_increase_pct
        FROM per p LEFT JOIN base b ON b.study = p.study AND b.dataset = p.dataset AND b.backbone = p.backbone
             AND b.split = p.split AND b.cached = p.cached"""),
}
VIEWS.update(ADAPTIVE_VIEWS)  # stopping rules over the stored step signals (harness/report/adaptive_views.py)
VIEWS.update(CLAIM_VIEWS)  # the paper's claims, one verdict each (harness/report/claims.py)
# Views over tables that a database may not have yet (created only when the table exists).
NEEDS_TABLE = {"report_latency": "latency", **ADAPTIVE_NEEDS, **CLAIM_NEEDS}


def _tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _version(names: list[str]) -> str:
    text = repr((sorted(MACROS.items()), [(n, VIEWS[n][1]) for n in names]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def create_views(con, temporary: bool = False) -> list[str]:
    """Create (or replace) the macros and views on a DuckDB connection; returns the view names in place.

    A view `report_views_version` records a hash of the definitions, so a database that already has the
    current views (the usual case) is not written to again."""
    tables = _tables(con)
    names = [n for n in VIEWS if n not in NEEDS_TABLE or NEEDS_TABLE[n] in tables]
    version = _version(names)
    if not temporary and "report_views_version" in tables:
        if con.execute("SELECT version FROM report_views_version").fetchone()[0] == version:
            return names
    temp = "TEMPORARY " if temporary else ""
    for sql in MACROS.values():
        con.execute(sql.replace("CREATE OR REPLACE MACRO", f"CREATE OR REPLACE {temp}MACRO"))
    created = []
    for name, (_, select) in VIEWS.items():
        if name in NEEDS_TABLE and NEEDS_TABLE[name] not in tables:
            continue
        try:
            con.execute(f"CREATE OR REPLACE {temp}VIEW {name} AS {select}")
        except Exception as exc:  # a bug here, not a user error: say which view
            raise RuntimeError(f"view {name}: {exc}") from exc
        created.append(name)
    con.execute(f"CREATE OR REPLACE {temp}VIEW report_views_version AS SELECT '{version}' AS version")
    return created


# The report's own connection snapshots the study's rows of the views every section reads into temporary
# tables of the same names (DuckDB resolves temporary objects first, inside views too), so they are computed
# once per report instead of once per query. Each holds exactly the view's rows for the study; `metrics` is
# cut to the trials of the chosen configurations, which is all that the views read after report_configs (the
# claims read every trial's test values from report_test_values, snapshot before the cut).
SNAPSHOT = (
    ("report_trials", "SELECT * FROM main.report_trials WHERE study = $study"),
    ("report_configs", "SELECT * FROM main.report_configs WHERE study = $study"),
    ("report_best", "SELECT * FROM main.report_best WHERE study = $study"),
    ("report_best_by_k", "SELECT * FROM main.report_best_by_k WHERE study = $study"),
    ("report_test_values", "SELECT * FROM main.report_test_values WHERE study = $study"),  # before the cut
    ("metrics", """SELECT m.* FROM main.metrics m WHERE m.trial_key IN (
        SELECT r.trial_key FROM report_trials r JOIN report_best b USING (study, config_id))"""),
    # the per-sample pass over step_signals, once: the adaptive section reads it four ways (the rows come
    # from harness/report/adaptive_fast.py, the same rows as the view, tested)
    ("report_adaptive_seeds", "SELECT * FROM main.report_adaptive_seeds WHERE study = $study"),
)
# snapshot tables built in Python instead of by their SELECT: (the queries, on the connection; the rest,
# which needs no connection and may run in a background thread)
FAST = {"report_adaptive_seeds": (fetch_signals, seeds_rows)}


def materialise(con, name: str, frame) -> None:
    """``frame`` as the connection's temporary table ``name`` (shadowing the view of that name)."""
    con.register("snapshot_rows", frame)
    con.execute(f"CREATE OR REPLACE TEMPORARY TABLE {name} AS SELECT * FROM snapshot_rows")
    con.unregister("snapshot_rows")


def snapshot_study(con, study: str, views: Iterable[str] | None = None, background=None) -> dict:
    """Materialise SNAPSHOT for one study in this connection only (other connections see the views);
    ``views``: the views this database has (a view it lacks is not snapshot). ``background``: an executor
    for FAST tables' NumPy part; their tables are then pending: returns {name: Future of the frame} for
    the caller to ``materialise`` before it reads them (Context.ready). Without it: built here, {}."""
    have = set(views) if views is not None else None
    pending = {}
    for name, select in SNAPSHOT:
        if have is not None and name.startswith("report_") and name not in have:
            continue
        if name in FAST:
            fetch, rows = FAST[name]
            fetched = fetch(con)
            if background is None:
                materialise(con, name, rows(*fetched))
            else:
                pending[name] = background.submit(rows, *fetched)
            continue
        con.execute(f"CREATE OR REPLACE TEMPORARY TABLE {name} AS {select}",
                    {"study": study} if "$study" in select else None)
    return pending


def describe(names: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(view, what it holds) for the README."""
    return [(n, VIEWS[n][0]) for n in (names or VIEWS)]
