"""`harness export STUDY`: a study's results as Parquet or CSV files any tool reads, with a README schema.

Writes `<out>/<study>/`: `results` (one row per trial, config and metric columns, as
harness.results.Results.frame), `trials`, `epochs`, `metrics`, `step_similarity`, `latency` and, with
``samples=True``, `sample_ranks`; plus README.md naming every file's columns and what they mean. The
folder is built under a temporary name and renamed into place, so an interrupted export leaves no
folder that looks complete (and an earlier export stays until the new one is whole).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import HarnessError
from .results import Results

FORMATS = ("parquet", "csv")
BATCH_ROWS = 1 << 18  # sample_ranks can hold millions of rows: stream it in batches of this many

# file -> (what one row is, SQL over {members} = the study's trials, `s` and `t`; None = the wide frame)
TABLES: dict[str, tuple[str, str | None]] = {
    "results": ("one trial: descriptive columns, `config/<setting>` (every resolved setting; nested ones as "
                "`config/a/b`) and `<split>/<metric>` for the method's own output on the whole split "
                "(`valid/ndcg@20`, `test/recall@10`, ...; empty where a trial has none: failed, pruned)", None),
    "trials": ("one trial of the study (any status), as the `trials` table; `params` and `env` are JSON text",
               "SELECT t.* REPLACE (CAST(t.params AS VARCHAR) AS params, CAST(t.env AS VARCHAR) AS env)"
               "{extra} FROM {members} WHERE s.study = ? ORDER BY t.dataset, t.backbone, t.method, "
               "t.reasoning_steps, t.seed, t.trial_key"),
    "epochs": ("one epoch of one trial: training loss, validation metrics, seconds, is_best (the epoch whose "
               "model was tested)", "SELECT e.* FROM {members} JOIN epochs e USING (trial_key) "
                                     "WHERE s.study = ? ORDER BY e.trial_key, e.epoch"),
    "metrics": ("one metric of one trial, split, reasoning step and user/item group",
                "SELECT m.* FROM {members} JOIN metrics m USING (trial_key) WHERE s.study = ? "
                "ORDER BY m.trial_key, m.split, m.step NULLS FIRST, m.user_group, m.metric"),
    "step_similarity": ("mean cosine similarity of two reasoning steps' states on a split",
                        "SELECT x.* FROM {members} JOIN step_similarity x USING (trial_key) "
                        "WHERE s.study = ? ORDER BY x.trial_key, x.split, x.step_a, x.step_b"),
    "latency": ("test-set inference time of a trained model, with / without the KV cache",
                "SELECT l.* FROM {members} JOIN latency l USING (trial_key) WHERE s.study = ? "
                "ORDER BY l.trial_key, l.cached"),
    "sample_ranks": ("one evaluation sample of one trial, split and step: the target's rank (1 = top)",
                     "SELECT r.* FROM {members} JOIN sample_ranks r USING (trial_key) "
                     "WHERE s.study = ? ORDER BY r.trial_key, r.split, r.step NULLS FIRST, r.sample"),
}
COLUMNS = {
    "trial_key": "sha256 of the trial's resolved configuration (its identity; join key of every file)",
    "dataset": "dataset name", "backbone": "sasrec | bert4rec | unisrec | morec", "method": "base | naive | rpe | erl | prl",
    "variant": "the paper's name, ablations included (`erl w/o KL`, `prl w/o RCL`)",
    "reasoning_steps": "K (0 for base)", "kl_lambda": "ERL lambda (empty for other methods)",
    "tau": "PRL tau (empty for other methods)", "alpha": "PRL alpha", "gamma": "PRL gamma", "seed": "training seed",
    "status": "completed | failed | running", "pruned": "stopped early by ASHA (no final evaluation)",
    "best_epoch": "epoch chosen on validation (test is evaluated there only)", "epochs": "epochs trained",
    "wall_seconds": "training time", "split": "valid | test",
    "step": "reasoning step 0..K; empty = the method's own output (ERL: mean of the steps; others: the last)",
    "user_group": "`all`, `user:UG0..3` (history-length quartiles) or `item:IG0..3` (target popularity, IG0 least)",
    "metric": "ndcg@10 | ndcg@20 | recall@10 | recall@20", "value": "the metric's value",
    "epoch": "1-based epoch", "train_loss": "mean training loss of the epoch", "seconds": "seconds",
    "is_best": "the best validation epoch so far at the end of training (the tested model)",
    "sample": "evaluation sample index within the split", "rank": "rank of the target item (1 = top; ties pessimistic)",
    "step_a": "reasoning step", "step_b": "reasoning step", "cosine": "mean cosine similarity",
    "cached": "inference with the KV cache", "rows": "test rows timed",
    "params": "every resolved setting (JSON)", "env": "package versions, git revision, host, GPU (JSON)",
    "in_definition": "false: linked by an earlier definition of the study only",
    "error": "the failure's traceback (failed trials)", "device": "torch device the trial ran on",
    "started_at": "UTC", "finished_at": "UTC", "n_parameters": "trainable parameters of the model",
    "run_dir": "the trial's directory (TensorBoard events, result files)",
    "dataset_hash": "content hash of the processed dataset", "host": "host the trial ran on",
    "node_id": "Ray node the trial ran on", "peak_gpu_bytes": "peak GPU memory allocated (empty on CPU)",
}


def _writable(out: Path, study: str) -> Path:
    """The temporary folder the export is built in; a clear error when ``out`` cannot take it."""
    partial = out / f".{study}.partial-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
    except OSError as exc:
        raise HarnessError(f"{out}: cannot write the export there ({exc.strerror or exc})") from None
    return partial


def _table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of a pandas frame; columns holding lists, dicts or mixed types become JSON text."""
    frame = frame.copy()
    for column in [c for c in frame.columns if pd.api.types.is_object_dtype(frame[c])]:
        kinds = {type(v) for v in frame[column] if v is not None and v == v}
        if len(kinds) > 1 or kinds & {list, dict, tuple}:
            frame[column] = [None if v is None else json.dumps(v, default=str) for v in frame[column]]
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(table.schema):  # an all-empty column: text, not Arrow's `null` type
        if pa.types.is_null(field.type):
            table = table.set_column(i, pa.field(field.name, pa.string()), table.column(i).cast(pa.string()))
    return table


class _Writer:
    """Streams record batches into one Parquet or CSV file."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt, self.writer, self.rows = path, fmt, None, 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self.writer is None:
            self.writer = (pq.ParquetWriter(self.path, batch.schema) if self.fmt == "parquet"
                           else pacsv.CSVWriter(self.path, batch.schema))
        self.writer.write(batch)
        self.rows += batch.num_rows

    def close(self, schema: pa.Schema) -> None:
        if self.writer is None:  # no rows: still a file with the columns
            self.write(schema.empty_table())
        self.writer.close()


def _schema_lines(name: str, schema: pa.Schema) -> list[str]:
    rows = []
    for field in schema:
        meaning = COLUMNS.get(field.name, "")
        if not meaning and field.name.startswith("config/"):
            meaning = "resolved setting (studies/README.md lists them)"
        elif not meaning and field.name.startswith(("valid/", "test/")):
            meaning = "metric of the method's own output on the whole split"
        elif not meaning and field.name.startswith("valid_"):
            meaning = "validation metric of the epoch"
        rows.append(f"| `{field.name}` | {field.type} | {meaning.replace('|', '/')} |")
    return [f"### {name}", "", TABLES[name][0] + ".", "", "| column | type | meaning |", "|---|---|---|", *rows, ""]


def export(db: str | Path, study: str, fmt: str = "parquet", out: str | Path = "exports",
           samples: bool = False) -> Path:
    """Write the study's files to ``<out>/<study>/`` and return that folder (see the module docstring)."""
    if fmt not in FORMATS:
        raise HarnessError(f"--format: unknown format {fmt!r}; choose parquet or csv")
    results = Results(db)
    results.check_study(study)
    out = Path(out)
    partial = _writable(out, study)
    try:
        summary, schemas = _write_all(results, study, fmt, partial, samples)
        _readme(partial, db, study, fmt, summary, schemas)
        final = out / study
        old = out / f".{study}.old-{os.getpid()}"
        if final.exists():
            final.rename(old)
        partial.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def _write_all(results: Results, study: str, fmt: str, folder: Path, samples: bool):
    summary: dict[str, int] = {}
    schemas: dict[str, pa.Schema] = {}
    table = _table(results.frame(study))
    writer = _Writer(folder / f"results.{fmt}", fmt)
    writer.write(table)
    writer.close(table.schema)
    summary["results"], schemas["results"] = writer.rows, table.schema
    members, extra = "study_trials s JOIN trials t USING (trial_key)", results.membership_columns()
    with results.store.connect() as con:
        for name, (_, sql) in TABLES.items():
            if sql is None or (name == "sample_ranks" and not samples):
                continue
            relation = con.sql(sql.format(members=members, extra=extra), params=[study])
            stream = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch  # DuckDB 2 / 1.x
            reader = stream(BATCH_ROWS)
            writer = _Writer(folder / f"{name}.{fmt}", fmt)
            for batch in reader:
                writer.write(batch)
            writer.close(reader.schema)
            summary[name], schemas[name] = writer.rows, reader.schema
    return summary, schemas


def _readme(folder: Path, db, study: str, fmt: str, summary: dict[str, int], schemas: dict[str, pa.Schema]) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [f"# Export of study `{study}`", "",
             f"From `{Path(db).absolute()}` on {stamp}, by `harness export {study} --format {fmt}`. One "
             f"{'Parquet' if fmt == 'parquet' else 'CSV (comma-separated, header row, empty = NULL)'} file per "
             "table; every file joins on `trial_key`. Choose configurations on `valid` metrics only: `test` was "
             "evaluated once, at the epoch chosen on validation.", "",
             "| file | rows | one row is |", "|---|---|---|"]
    lines += [f"| `{name}.{fmt}` | {rows} | {TABLES[name][0].split(':')[0]} |" for name, rows in summary.items()]
    if "sample_ranks" not in summary:
        lines += ["", "Per-sample ranks are left out; `harness export ... --samples` adds `sample_ranks`."]
    lines += ["", "## Columns", ""]
    for name, schema in schemas.items():
        lines += _schema_lines(name, schema)
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
