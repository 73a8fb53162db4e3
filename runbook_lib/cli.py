"""The ``runbook`` command: run steps through papermill and file them under ``outputs/<run_id>/``.

Exit codes: 0 success, 1 the step ran and failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runbook_lib.config.settings import load_settings
from runbook_lib.config.steps import ALL_STEPS, STEPS
from runbook_lib.errors import ConfigError, RunbookError
from runbook_lib.runner import cleanup
from runbook_lib.state.run import Run, list_runs, outputs_error, write_json


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one sentence, exit 2
        self.print_usage(sys.stderr)
        print(f"runbook: error: {message}", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runbook", description="ChromaDB -> Qdrant migration runbook (see README.md).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for step in (*STEPS, "all"):
        helptext = f"{', '.join(ALL_STEPS)} in one run folder" if step == "all" else f"run the {step} step"
        sp = sub.add_parser(step, help=helptext)
        sp.add_argument("--run-id", help="continue or address an existing run (default: a new run id)")
        sp.add_argument(
            "-p",
            "--parameter",
            nargs=2,
            action="append",
            default=[],
            metavar=("NAME", "VALUE"),
            help="a notebook parameter (repeatable)",
        )
        sp.add_argument("-f", "--parameters-file", type=Path, help="YAML file of notebook parameters")
    sub.add_parser("runs", help="list the runs under RUNBOOK_OUTPUTS with their status")
    sd = sub.add_parser("sample-data", help="create the sample ChromaDB (14 collections, 14,365 records)")
    sd.add_argument("--path", type=Path, help="where to create it (default: CHROMA_PERSIST_DIR)")
    sd.add_argument("--scale", type=float, default=1.0, help="record-count multiplier (default 1)")
    sd.add_argument("--seed", type=int, default=42)
    sd.add_argument("--if-missing", action="store_true", help="do nothing when the directory already exists")
    cleanup.add_parser(sub)
    return parser


def _load_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.parameters_file:
        import yaml

        try:
            loaded = yaml.safe_load(args.parameters_file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"The parameters file {args.parameters_file} does not exist.") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"The parameters file {args.parameters_file} is not valid YAML: {exc}.") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"The parameters file {args.parameters_file} must hold a mapping of name: value.")
        params.update(loaded)
    for name, value in args.parameter:
        params[name] = value
    if "run_id" in params:
        raise ConfigError("Pass the run id with --run-id, not as a parameter.")
    return params


def _run_steps(steps: Sequence[str], args: argparse.Namespace) -> int:
    from runbook_lib.runner.execute import coerce_parameters

    settings = load_settings()
    raw = _load_params(args)
    per_step: dict[str, dict[str, Any]] = {}
    if len(steps) == 1:
        per_step[steps[0]] = coerce_parameters(steps[0], raw, run_id=args.run_id)
    else:
        used: set[str] = set()
        for step in steps:
            per_step[step] = coerce_parameters(step, raw, strict=False, run_id=args.run_id)
            used |= set(per_step[step])
        unknown = sorted(set(raw) - used)
        if unknown:
            raise ConfigError(f"Unknown parameter {unknown[0]!r}: no step of `runbook all` declares it.")
    if "rollback" not in steps and not settings.chroma.is_server:
        settings.chroma.require_persist_dir()
    if "rollback" in steps and not args.run_id:
        raise ConfigError(
            "Pass the run id of the migration to undo: runbook rollback --run-id ID (`runbook runs` lists them)."
        )
    run = Run.open(settings.outputs, args.run_id) if args.run_id else Run.create(settings.outputs)
    with run.driving():  # one process drives a run: a second one is refused before it changes anything
        return _drive(steps, run, per_step)


def _drive(steps: Sequence[str], run: Run, per_step: dict[str, dict[str, Any]]) -> int:
    from runbook_lib.runner.execute import execute_step
    from runbook_lib.runner.interrupt import EXIT_INTERRUPTED

    print(f"runbook: run {run.run_id} in {run.dir}", file=sys.stderr)
    for step in steps:
        print(f"runbook: {step} ...", file=sys.stderr)
        outcome = execute_step(step, run, per_step[step])
        if outcome.exit_code == 0:
            print(f"runbook: {step} ok: {outcome.message}", file=sys.stderr)
            continue
        if outcome.exit_code == EXIT_INTERRUPTED:
            print(
                f"runbook: {step} interrupted; what it did so far is filed in {run.dir} "
                f"(run again with --run-id {run.run_id} to continue).",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        if not run.result_path(step).is_file():
            write_json(
                run.result_path(step),
                {"step": step, "run_id": run.run_id, "status": "failed", "ok": False, "error": outcome.message},
            )
        print(f"runbook: {step} FAILED (exit {outcome.exit_code}): {outcome.message}", file=sys.stderr)
        print(f"runbook: the executed notebook is {outcome.notebook or 'missing'}", file=sys.stderr)
        if outcome.log is not None and outcome.log.is_file():
            print(f"runbook: the execution log is {outcome.log}; its last lines:", file=sys.stderr)
            for line in outcome.log.read_text(encoding="utf-8", errors="replace").splitlines()[-8:]:
                print(f"runbook:   {line[:300]}", file=sys.stderr)
        return outcome.exit_code
    print(f"runbook: done; evidence in {run.dir}", file=sys.stderr)
    return 0


def _runs() -> int:
    settings = load_settings()
    runs = list_runs(settings.outputs)
    if not runs:
        print(f"No runs under {settings.outputs}.")
        return 0
    width = max(len(r["run_id"]) for r in runs)
    print(f"{'RUN ID':<{width}}  {'STATUS':<10}  STEPS")
    for r in runs:
        print(f"{r['run_id']:<{width}}  {r['status']:<10}  {r['steps']}")
    return 0


def _sample_data(args: argparse.Namespace) -> int:
    from runbook_fixtures.sample_data import create_sample_db

    path = args.path
    if path is None:
        path = load_settings().chroma.persist_dir
    if args.if_missing and path.exists():
        print(f"runbook: {path} exists; leaving it as it is.", file=sys.stderr)
        return 0
    counts = create_sample_db(path, seed=args.seed, scale=args.scale)
    print(f"runbook: created {path}: {len(counts)} collections, {sum(counts.values()):,} records.", file=sys.stderr)
    return 0


#: Packages of the runbook layer (the ``runbook`` extra) the command needs; the app layer installs without them.
RUNBOOK_PACKAGES = ("papermill", "nbconvert", "nbformat", "ipykernel", "pandas", "matplotlib", "yaml")


def missing_runbook_packages() -> list[str]:
    from importlib.util import find_spec

    return [name for name in RUNBOOK_PACKAGES if find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    missing = missing_runbook_packages()
    if missing:
        print(
            f"runbook: error: the runbook command needs the runbook layer ({', '.join(missing)} missing): "
            "install it with `pip install 'runbook-lib[runbook]'` (or `make run`, which does).",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    try:
        if args.command == "runs":
            return _runs()
        if args.command == "sample-data":
            return _sample_data(args)
        if args.command == "cleanup":
            return cleanup.run(args)
        steps = ALL_STEPS if args.command == "all" else (args.command,)
        return _run_steps(steps, args)
    except RunbookError as exc:
        print(f"runbook: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a full outputs disk outside the writes that already say so
        error = outputs_error(Path(exc.filename or load_settings().outputs), exc)
        if error is None:
            raise
        print(f"runbook: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("runbook: interrupted; run again with the same --run-id to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
