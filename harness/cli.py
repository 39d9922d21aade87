"""`harness`: run, plan and inspect studies; query and export results; TensorBoard; dataset preparation.

Exit codes: 0 success; 1 a run finished with failed trials; 2 bad arguments, study file, SQL or
dataset (nothing was started or written); 3 environment: database in use, no GPU for --device cuda,
Ray could not start, a download failed or Yelp is not downloaded yet; 4 internal error (a bug; traceback
printed); 5 `plan` only: a built-in dataset's raw files are not there yet (the trial count is printed and
the missing datasets are named with how to get them); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import (
    EXIT_DATA_MISSING,
    EXIT_ENVIRONMENT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TRIALS_FAILED,
    EXIT_USAGE,
    HarnessError,
    StudyError,
)
from .expand import DEFAULT_MAX_TRIALS
from .store import DEFAULT_DB

DB_HELP = f"DuckDB results database (default: ./{DEFAULT_DB}, in the current directory)"


def _out(line: str) -> None:
    print(line, flush=True)


def _load(args):
    from .datasets import parse_datasets
    from .expand import validate
    from .study import load_study

    study = load_study(args.study, args.set)
    parse_datasets(study)
    validate(study, args.max_trials)  # the size from the axes first: a huge study is refused in milliseconds
    return study


def cmd_run(args) -> int:
    from .failures import headline as summary_line
    from .runner import RunOptions, StudyRunner

    study = _load(args)  # every check that needs no I/O happens before anything is written or started
    device = "cpu-with-logical-gpus" if args.cpu_with_logical_gpus else args.device
    options = RunOptions(db=Path(args.db), runs=Path(args.runs), cache_dir=Path(args.cache_dir), address=args.address,
                         device=device, retries=args.retries, concurrency=args.concurrency,
                         num_cpus=args.num_cpus, dashboard=args.dashboard, asha=args.asha, mlflow=args.mlflow,
                         max_trials=args.max_trials)
    if args.mlflow:
        from .tracking import require_mlflow

        require_mlflow()  # exit 2 before any work when the optional extra is missing
    summary = StudyRunner(study, options, out=_out).run()
    failed = summary["failed"]
    _out(f"study {study.name}: {summary['completed']} trials completed now, {summary['skipped']} already complete, "
         f"{len(failed)} failed" + (f", {summary['interrupted']} not finished" if summary["interrupted"] else "")
         + f"; results in {args.db}")
    for key, error in failed.items():
        _out(f"  failed {key[:12]}: {summary_line(error)}")
    for error in summary["internal_errors"]:
        _out(f"  internal error: {error}")
    if summary["aborted"]:
        _out(f"  Ray Tune stopped before the study finished ({summary['aborted']}); completed trials are stored: "
             "run the same command again to finish the rest")
        return EXIT_ENVIRONMENT
    if summary["internal_errors"]:
        return EXIT_INTERNAL
    if summary["interrupted"] and not failed:
        return EXIT_INTERRUPTED
    return EXIT_TRIALS_FAILED if failed else EXIT_OK


def cmd_plan(args) -> int:
    from .datasets import resolve_available
    from .runner import RunOptions, make_plan
    from .store import Store

    study = _load(args)
    datasets, missing = resolve_available(study, args.cache_dir, log=_out)  # no raw files yet: named below
    store = Store(args.db, read_only=True) if Path(args.db).exists() else None
    options = RunOptions(db=Path(args.db), cache_dir=Path(args.cache_dir), max_trials=args.max_trials)
    plan = make_plan(study, options, store, log=_out, datasets=datasets)
    res = study.resources
    _out(f"study {study.name} ({study.file}): {study.search.algorithm} search, {plan.planned} trials")
    if study.search.algorithm == "grid":
        counts: dict[str, int] = {}
        for t in plan.trials:
            counts[t.method["name"]] = counts.get(t.method["name"], 0) + 1
        _out("  per method: " + ", ".join(f"{m} {n}" for m, n in counts.items()))
        failed = sum(plan.statuses.get(t.key) == "failed" for t in plan.trials)
        _out(f"  already complete: {plan.completed}; failed earlier: {failed}; to run: {plan.remaining}")
    else:
        budgets = sorted({group.budget(study.search.num_samples) for group, _, _ in plan.groups})
        rerun = sum(len(plan.history[g.id].rerun(g.budget(study.search.num_samples))) for g, _, _ in plan.groups)
        _out(f"  {len(plan.groups)} Optuna searches x {'/'.join(map(str, budgets))} trials; already complete: "
             f"{plan.completed}; to run: {plan.remaining}"
             + (f" ({rerun} interrupted sample(s) re-run first)" if rerun else "")
             + (f"; {len(plan.abandon)} interrupted sample(s) no run will redo (marked abandoned by the next run)"
                if plan.abandon else ""))
    _out(f"  resources per trial: {res.cpu:g} CPU, {res.gpu:g} GPU; concurrency: "
         f"{study.concurrency or 'as many as fit'}; selection: {study.metric} (max)"
         + ("; ASHA early stopping" if study.asha else ""))
    for line in _estimate_lines(study, plan, store, args):
        _out(line)
    if args.list and plan.trials:
        import pandas as pd

        from .store import trial_row

        rows = [{"trial": t.short, **{k: row[k] for k in ("dataset", "backbone", "method", "reasoning_steps",
                                                          "kl_lambda", "tau", "alpha", "gamma", "seed")},
                 "status": plan.statuses.get(t.key, "pending")}
                for t in plan.trials for row in [trial_row(t, "")]]
        _out(pd.DataFrame(rows).to_string(index=False))
    if missing:
        names = ", ".join(m.ref.name for m in missing)
        _out(f"  not prepared: {len(missing)} of {len(datasets)} datasets ({names}); their trials are counted above, "
             "but their keys, and so what is already complete, are known only once they are prepared:")
        for m in missing:
            _out(f"    datasets[{m.ref.index}] {m.ref.name}: {m.problem}")
            _out(f"      {m.how}")
        return EXIT_DATA_MISSING
    return EXIT_OK


def _estimate_lines(study, plan, store, args) -> list[str]:
    """`harness plan`'s cost estimate of the trials still to run (harness/cost.py): one query in all."""
    from .cost import at_once, estimate, plan_lines, size_of, trial_size, wanted_frame
    from .expand import make_trial
    from .study import Choice

    if study.search.algorithm == "grid":
        rows = [trial_size(t) for t in plan.to_run]
    else:  # an Optuna search's samples share its pinned size; a searched size field matches any value
        rows = []
        for group, points, _ in plan.groups:
            left = group.budget(study.search.num_samples) - len(points)
            if left > 0:
                first = {k: (d.values[0] if isinstance(d, Choice) else d.low) for k, d in group.space.items()}
                spec = make_trial(group.dataset, group.backbone, group.entry.name, {**group.pinned, **first},
                                  group.seed, study.selection.name)
                rows += [size_of(spec.model, spec.method, group.dataset.content_hash, group.space)] * left
    est = estimate(store, wanted_frame(rows))
    res = study.resources
    slots, assumption = at_once(res.cpu, res.gpu, study.concurrency, est.to_run, args.cpus, args.gpus)
    return plan_lines(est, slots, assumption, no_db=store is None)


def cmd_status(args) -> int:
    from .report.status import study_lines
    from .store import RunLock, Store

    store = Store(args.db, read_only=True, timeout=10)
    live = RunLock(args.db).held_elsewhere()
    where = "WHERE s.study = ?" if args.study else ""
    params = [args.study] if args.study else []
    studies = store.query(f"SELECT s.study, s.planned, s.algorithm, s.updated_at FROM studies s {where} ORDER BY s.study",
                          params)
    if args.study and studies.empty:
        raise HarnessError(f"{args.db}: no study named {args.study!r}")
    for study, planned, algorithm, updated in studies.itertuples(index=False):
        for line in study_lines(store, study, int(planned), algorithm, updated, live, args.verbose):
            _out(line)
    if studies.empty:
        _out(f"{args.db}: no studies yet")
    return EXIT_OK


def cmd_sql(args) -> int:
    import duckdb
    import pandas as pd

    from .store import Store

    store = Store(args.db, read_only=True, timeout=10)
    try:
        frame = store.query(args.query)
    except duckdb.Error as exc:
        raise HarnessError(f"sql: {exc}") from None
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                               "display.max_colwidth", 80):
            _out(frame.to_string(index=False) if len(frame) else f"(0 rows; columns: {', '.join(frame.columns)})")
    return EXIT_OK


def cmd_report(args) -> int:
    from .report import build_report

    study = args.study
    if study.endswith((".yaml", ".yml")):  # a study file names its study
        if not Path(study).is_file():
            print(f"harness: error: {study}: no such study file (pass a study name or an existing study file)",
                  file=sys.stderr)
            return EXIT_USAGE
        from .study import load_study

        study = load_study(study).name
    readme = build_report(args.db, study, args.out)
    _out(f"report for study {study}: {readme}")
    return EXIT_OK


def cmd_tensorboard(args) -> int:
    from .tensorboard import serve

    return serve(args.runs, args.study, args.port, out=_out)  # runs named dataset backbone method K ... key


def cmd_export(args) -> int:
    from .export import export

    folder = export(args.db, args.study, args.format, args.out, samples=args.samples)
    _out(f"export of study {args.study}: {folder}/ ({args.format}; README.md there lists the files and columns)")
    return EXIT_OK


def cmd_data(args) -> int:
    from rearec.data import DataError
    from rearec.data.cli_support import download_command, list_command, prepare_command, stats_command
    from rearec.data.download import DownloadError
    from rearec.errors import ConfigError

    try:
        if args.data_command == "prepare":
            prepare_command(args.datasets, args.cache_dir, raw_dir=args.raw_dir, rebuild=args.rebuild, echo=_out)
        elif args.data_command == "stats":
            _out(stats_command(args.datasets, args.cache_dir, raw_dir=args.raw_dir, fmt=args.format))
        elif args.data_command == "download":
            # Exit 3 (environment): a file could not be fetched, or Yelp still has to be downloaded by hand.
            complete = download_command(args.datasets, args.cache_dir, raw_dir=args.raw_dir, base_url=args.base_url,
                                        force=args.force, echo=_out, retries=args.retries, timeout=args.timeout)
            return EXIT_OK if complete else EXIT_ENVIRONMENT
        else:
            _out(list_command())
    except DownloadError as exc:
        print(f"harness: error: data download: {exc}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except (DataError, ConfigError) as exc:
        raise HarnessError(f"data: {exc}") from None
    return EXIT_OK


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=DB_HELP)
        p.set_defaults(func=func)
        return p

    def study_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("study", help="study file (YAML), e.g. studies/quickstart.yaml")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a study value; VALUE is YAML (e.g. --set params.max_epochs=2, "
                            "--set 'datasets=[{interactions: path/to/file.tsv.gz}]'); repeatable")
        p.add_argument("--cache-dir", default="data", help="dataset cache folder (default: ./data)")
        p.add_argument("--max-trials", type=_count(1), default=DEFAULT_MAX_TRIALS, metavar="N",
                       help=f"refuse a study of more than N trials, counted from its axes before anything is "
                            f"expanded (default {DEFAULT_MAX_TRIALS:,})")

    p = command("run", cmd_run, "run a study's missing trials on Ray Tune and store the results")
    study_args(p)
    p.add_argument("--runs", default="runs", help="trial directories and TensorBoard files (default: ./runs)")
    p.add_argument("--address", help="join a running Ray cluster (e.g. 10.0.0.1:6379 or auto); "
                                     "default: start a local Ray instance")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: GPUs if the study asks and the cluster has them, else CPU with a warning; "
                        "cuda: fail before launching when there is no GPU; cpu: never use GPUs")
    p.add_argument("--retries", type=_count(0), default=0, help="re-run a failed trial up to N times (default 0)")
    p.add_argument("--concurrency", type=_count(1), help="at most N trials at once (overrides the study)")
    p.add_argument("--num-cpus", type=_count(1), help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=None,
                   help="start the Ray dashboard with a local instance (default: Ray's choice)")
    p.add_argument("--asha", action="store_true", help="ASHA early termination even if the study does not ask")
    p.add_argument("--mlflow", nargs="?", const="./mlruns", metavar="URI",
                   help="log each trial to MLflow from the driver (the `mlflow` extra): a tracking URI or a folder; "
                        "bare --mlflow = the local file store ./mlruns; put it after STUDY or write --mlflow=URI")
    # Tests only (hidden): Ray schedules GPU requests on GPUs a CPU node merely declares, trials run on CPU.
    p.add_argument("--cpu-with-logical-gpus", action="store_true", help=argparse.SUPPRESS)

    p = command("plan", cmd_plan, "validate a study and print its trial count, what is complete, the resources and "
                                  "an estimate of the compute and wall time still to spend")
    study_args(p)
    p.add_argument("--list", action="store_true", help="list every trial with its status")
    p.add_argument("--cpus", type=_count(1), metavar="N",
                   help="CPUs of the cluster that will run the study, for the wall-time estimate "
                        "(default: this machine's)")
    p.add_argument("--gpus", type=_positive, metavar="N",
                   help="GPUs of that cluster, for the wall-time estimate of a study that asks for GPUs")

    p = command("status", cmd_status, "per-study progress and failures with their errors")
    p.add_argument("study", nargs="?", help="only this study")
    p.add_argument("-v", "--verbose", action="store_true", help="full error text")

    p = command("sql", cmd_sql, "run a SQL query on the results database (opened read-only)")
    p.add_argument("query", help='e.g. "SELECT method, count(*) FROM trials GROUP BY method"')
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")

    p = command("report", cmd_report, "write a study's tables (Markdown, CSV, LaTeX) and figures (PNG) to "
                                      "<out>/<study>/, from SQL views it (re)creates in the database")
    p.add_argument("study", help="study name (as `harness status` lists it) or its study file")
    p.add_argument("--out", default="reports", help="reports folder (default: ./reports)")

    p = command("tensorboard", cmd_tensorboard, "start TensorBoard on a study's trials, bound to 127.0.0.1")
    p.add_argument("study", help="study name (its trial directories are <runs>/<study>/)")
    p.add_argument("--runs", default="runs", help="runs folder (default: ./runs)")
    p.add_argument("--port", type=int, default=6006)

    p = command("export", cmd_export, "write a study's trials, per-epoch logs and metrics as Parquet or CSV "
                                      "files (with a README of their columns) to <out>/<study>/")
    p.add_argument("study", help="study name (as `harness status` lists it)")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="file format (default parquet)")
    p.add_argument("--out", default="exports", help="exports folder (default: ./exports)")
    p.add_argument("--samples", action="store_true", help="also the per-sample ranks (sample_ranks; large)")

    p = command("data", cmd_data, "prepare datasets, print their statistics (the paper's Table 1), list built-ins, "
                                  "download the paper's Amazon 2023 files")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, text in (("prepare", "preprocess, split and cache datasets (reuses a good cache)"),
                       ("stats", "print Table 1 statistics, processed and raw counts (prepares first if needed)"),
                       ("list", "list the built-in datasets and the raw files each needs"),
                       ("download", "fetch the official files of built-in datasets into their raw folders "
                                    "(Amazon 2023: resumable, size- and gzip-verified; Yelp: prints what to fetch "
                                    "by hand). Exit 3 when a file cannot be fetched or Yelp is not in place yet")):
        d = dsub.add_parser(name, help=text, description=text)
        d.add_argument("--db", default=DEFAULT_DB, metavar="PATH", help=DB_HELP + " (unused by data commands)")
        if name == "list":
            continue
        if name == "download":
            d.add_argument("datasets", nargs="+", metavar="NAME",
                           help="built-in names: amazon2023-video-games, amazon2023-software, amazon2023-cds-and-vinyl, "
                                "amazon2023-baby-products, yelp")
        else:
            d.add_argument("datasets", nargs="+", metavar="DATASET",
                           help="a built-in name (synthetic, yelp, amazon2023-video-games, ...), an interactions file, "
                                "a dataset folder (interactions.* [+ items.*], or one RecBole *.inter [+ .item]), "
                                "or a JSON mapping like '{\"interactions\": \"f.tsv.gz\", \"kcore\": 5}'")
        d.add_argument("--cache-dir", default="data", help="dataset cache folder (default: ./data)")
        d.add_argument("--raw-dir", help="folder of the raw files of a built-in Yelp / Amazon 2023 dataset "
                                         "(default: <cache-dir>/raw/<name>)")
        if name == "prepare":
            d.add_argument("--rebuild", action="store_true", help="rebuild even if a good cache exists")
        elif name == "stats":
            d.add_argument("--format", choices=("markdown", "json"), default="markdown")
        else:
            d.add_argument("--base-url", metavar="URL",
                           help="where the Amazon 2023 files are (a mirror, or a local server in tests); default: "
                                "$REAREC_AMAZON2023_BASE_URL, else the official "
                                "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023")
            d.add_argument("--force", action="store_true", help="fetch files again even if they are present")
            d.add_argument("--retries", type=_count(0), default=5,
                           help="attempts in a row without progress before giving up (default 5)")
            d.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a retry (default 60)")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StudyError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `harness sql ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception:  # noqa: BLE001 - a bug: say so with the traceback, and keep exit 1 for failed trials
        import traceback

        traceback.print_exc()
        print("harness: internal error (a bug; the traceback is above)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
