#!/usr/bin/env python3
"""Cross-validated studies of the MTLSER recipe: ablation, loss-weight grid, single config.

Each cell (one ``(alpha, beta)`` on one fold) is one run of ``train.py`` in
``RESULTS_FOLDER/runs/<config>/<fold>``; the folds are the 5 held-out sessions
under leave-one-session-out (``--protocol loso``, speaker-independent) or 5
seeds of the random utterance-level split (``--protocol random``, the paper's
protocol, which shares speakers and dialogs between train and test). Then
everything is aggregated into ``RESULTS_FOLDER``: ``results.csv``,
``results.json``, ``results.md``, ``protocol.json``/``protocol.md`` with the
split lists under ``splits/``, and PNGs (confusion matrices, WA/UA heatmaps
over the grid, bars with error bars).

The paper's ablation, leave-one-session-out, on IEMOCAP::

    python run_experiments.py hparams/mtl.yaml --study ablation \\
        --results_folder results/ablation_loso --data_folder /data/IEMOCAP_full_release

The sensitivity grid, 4 concurrent cells (one per GPU when there are 4)::

    python run_experiments.py hparams/mtl.yaml --study grid --alphas 0 0.01 0.1 0.3 1 \\
        --betas 0 0.01 0.1 0.3 1 --results_folder results/grid_loso \\
        --data_folder /data/IEMOCAP_full_release --jobs 4

On a Slurm cluster, one job-array task per cell (``pip install submitit``)::

    python run_experiments.py hparams/mtl.yaml --study grid ... --launcher submitit \\
        --slurm_partition gpu --timeout_min 600 --gpus 1

A lever study: emotion only, the multi-task default, and one row per
``--variant NAME "TRAIN.PY OPTIONS"`` at the same alpha and beta::

    python run_experiments.py hparams/mtl.yaml --study levers --alpha 0.1 --beta 0.1 \
        --variant ctc_lstm "--ctc_block lstm" --variant balanced "--class_balanced_loss True" ...

Every study also reports floors computed on exactly the same splits
(``--floors``, default: majority class, MFCC and filterbank statistics with
logistic regression; see ``mtlser_lobes.studies.baselines``), with paired tests of
every configuration against them.

Any other ``--key value`` is passed to every ``train.py`` run (e.g.
``--number_of_epochs 10 --wav2vec2_hub tiny_wav2vec2``). Re-running the same
command skips finished cells and resumes unfinished ones from their last
checkpoint; a cell that still fails after ``--retries`` is reported and left
out of the averages (exit status 1). A leak of a test speaker or dialog into
train/valid under leave-one-session-out stops the study (exit status 2).

Authors
 * MTLSER developers
"""

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import sys

from speechbrain.utils.logger import get_logger

from mtlser_lobes.studies import experiments
from mtlser_lobes.studies.baselines import FLOORS, evaluate_floor, read_split_rows, write_floor_results
from mtlser_lobes.demo.demo_corpus import generate_demo_corpus
from mtlser_lobes.helpers import write_text_atomically

RECIPE_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, RECIPE_DIR)

from iemocap_prepare import PreparationError, check_no_speaker_leakage, split_overlap  # noqa: E402

logger = get_logger(__name__)

EMOTION_CLASSES = ["neu", "hap", "ang", "sad"]
DEMO_DATA_FOLDER = os.path.join("data", "demo", "IEMOCAP_full_release")
#: train.py options that the study sets per cell.
RESERVED = ("alpha", "beta", "seed", "test_session", "protocol", "output_folder")
DEFAULT_GRID = [0.0, 0.01, 0.1, 0.3, 1.0]
REFERENCE = experiments.config_name(0, 0)


class LeakageError(RuntimeError):
    """A test speaker or dialog occurs in train/valid under leave-one-session-out."""


def parse_args(argv):
    """Study options; everything else is returned as train.py overrides."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Unknown --key value pairs are passed to every train.py run.",
    )
    parser.add_argument("hparams", help="train.py's YAML, e.g. hparams/mtl.yaml")
    parser.add_argument("--study", choices=["ablation", "grid", "single", "levers"],
                        default="ablation",
                        help="ablation: (0,0), (alpha,0), (0,beta), (alpha,beta); grid: alphas x "
                        "betas; single: (alpha, beta); levers: (0,0), (alpha,beta) and each "
                        "--variant at (alpha,beta)")
    parser.add_argument("--variant", nargs=2, action="append", default=[],
                        metavar=("NAME", "OPTIONS"),
                        help='a configuration at (alpha, beta) with extra train.py options, e.g. '
                        '--variant ctc_lstm "--ctc_block lstm" (levers; repeatable)')
    parser.add_argument("--floors", nargs="*", default=list(FLOORS), choices=FLOORS,
                        help="floor rows computed on the same splits (default: all; none: "
                        "--floors with no name)")
    parser.add_argument("--results_folder", required=True)
    parser.add_argument("--runs_folder", default=None,
                        help="where the cells train (default RESULTS_FOLDER/runs); studies that "
                        "share it reuse each other's finished cells (same train.py arguments)")
    parser.add_argument("--protocol", choices=["loso", "random"], default="loso")
    parser.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5],
                        help="held-out sessions (loso)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds: one per fold under random (default 5: 1986..1990), "
                        "repeats of each fold under loso (default 1986)")
    parser.add_argument("--alpha", type=float, default=0.1, help="CTC weight (ablation, single)")
    parser.add_argument("--beta", type=float, default=0.1, help="speaker weight (ablation, single)")
    parser.add_argument("--alphas", type=float, nargs="+", default=DEFAULT_GRID)
    parser.add_argument("--betas", type=float, nargs="+", default=DEFAULT_GRID)
    parser.add_argument("--data_folder", default=None,
                        help="IEMOCAP_full_release (default: the generated demo corpus)")
    parser.add_argument("--launcher", choices=experiments.LAUNCHERS, default="local")
    parser.add_argument("--jobs", type=int, default=1, help="concurrent cells (local launcher)")
    parser.add_argument("--gpus", type=int, default=None,
                        help="local: GPUs to spread cells over (default: all visible); "
                        "ray/submitit: >0 gives each cell one GPU (default 0)")
    parser.add_argument("--retries", type=int, default=1, help="extra attempts of a failed cell")
    parser.add_argument("--no_run", action="store_true",
                        help="launch nothing: aggregate the cells finished so far")
    parser.add_argument("--export", action="store_true",
                        help="also export each cell's inference model (off: saves time and disk)")
    parser.add_argument("--ray_address", default=None)
    parser.add_argument("--submitit_cluster", default=None,
                        help="None: auto (Slurm when available); local; debug")
    parser.add_argument("--slurm_partition", default=None)
    parser.add_argument("--timeout_min", type=int, default=24 * 60)
    args, overrides = parser.parse_known_args(argv)
    for option in overrides:
        if option.startswith("--") and option[2:].split("=")[0] in RESERVED:
            parser.error(f"{option} is set per cell by the study; use the study's options")
    names = [name for name, _ in args.variant]
    if len(set(names)) != len(names) or any(not re.fullmatch(r"[A-Za-z][\w.-]*", n) for n in names):
        parser.error("--variant names must be distinct words (letters, digits, _ . -)")
    for name, options in args.variant:
        for option in shlex.split(options):
            if option.startswith("--") and option[2:].split("=")[0] in RESERVED:
                parser.error(f"--variant {name}: {option} is set per cell by the study")
    if args.variant and args.study != "levers":
        parser.error("--variant belongs to --study levers")
    if args.seeds is None:
        args.seeds = [1986 + i for i in range(5)] if args.protocol == "random" else [1986]
    return args, overrides


def study_configs(args):
    """(alpha, beta) pairs of the study, in table order."""
    if args.study == "ablation":
        pairs = [(0.0, 0.0), (args.alpha, 0.0), (0.0, args.beta), (args.alpha, args.beta)]
        return list(dict.fromkeys(pairs))
    if args.study == "grid":
        return [(a, b) for a in args.alphas for b in args.betas]
    if args.study == "levers":
        pairs = [(0.0, 0.0), (args.alpha, args.beta)]
        return list(dict.fromkeys(pairs)) + [
            (args.alpha, args.beta, name, tuple(shlex.split(options)))
            for name, options in args.variant
        ]
    return [(args.alpha, args.beta)]


def count_sessions(data_folder):
    """Number of ``SessionN`` folders of an IEMOCAP-layout release."""
    sessions = [d for d in os.listdir(data_folder) if re.fullmatch(r"Session\d+", d)]
    if not sessions:
        raise FileNotFoundError(f"no Session1..Session5 folders in {data_folder}")
    return len(sessions)


def without_options(options, replaced_by):
    """``options`` less the ``--key [value]`` whose key ``replaced_by`` sets (a variant's own win).

    Example
    -------
    >>> without_options(["--a", "1", "--b=2", "--c", "3"], ["--a", "5", "--b", "6"])
    ['--c', '3']
    """
    keys = {o[2:].split("=")[0] for o in replaced_by if o.startswith("--")}
    kept, skip_value = [], False
    for option in options:
        if skip_value:
            skip_value = False
            continue
        if option.startswith("--") and option[2:].split("=")[0] in keys:
            skip_value = "=" not in option
            continue
        kept.append(option)
    return kept


def option_value(options, key):
    """The value the last ``--key value`` or ``--key=value`` of ``options`` gives, or None.

    Example
    -------
    >>> option_value(["--a", "1", "--b=2", "--a", "3"], "a"), option_value(["--b=2"], "b"), option_value([], "a")
    ('3', '2', None)
    """
    value = None
    for i, option in enumerate(options):
        if option == f"--{key}" and i + 1 < len(options):
            value = options[i + 1]
        elif option.startswith(f"--{key}="):
            value = option.split("=", 1)[1]
    return value


def cell_specs(cells, args, overrides, data_folder, runs_folder):
    """The train.py command of each cell; refuses a folder run with other arguments."""
    n_sessions = count_sessions(data_folder)
    specs = []
    for cell in cells:
        folder = os.path.join(runs_folder, cell.config, cell.fold)
        extra = list(overrides)
        if option_value(overrides, "n_speakers") is None:
            # Two speakers per session; leave-one-session-out trains on the other sessions,
            # less the validation session with --valid_split session.
            by_session = option_value([*overrides, *cell.overrides], "valid_split") == "session"
            held_out = 0 if args.protocol == "random" else 1 + by_session
            extra += ["--n_speakers", str(2 * (n_sessions - held_out))]
        if not args.export:
            extra += ["--export_inference_model", "False"]
        train_args = [
            args.hparams, "--data_folder", data_folder, "--protocol", cell.protocol,
            "--alpha", f"{cell.alpha:g}", "--beta", f"{cell.beta:g}",
            "--test_session", str(cell.test_session), "--seed", str(cell.seed),
            "--output_folder", folder, *without_options(extra, cell.overrides), *cell.overrides,
        ]
        record_path = os.path.join(folder, experiments.CELL_FILE)
        if os.path.isfile(record_path):
            with open(record_path) as record_file:
                previous = json.load(record_file)["train_args"]
            if previous != train_args:
                raise SystemExit(
                    f"{folder} was run with other arguments:\n  {' '.join(previous)}\nnot\n  "
                    f"{' '.join(train_args)}\nUse another --results_folder, or delete the cell."
                )
        specs.append({
            "cell": cell, "folder": folder, "cwd": RECIPE_DIR, "attempts": 1 + args.retries,
            "command": [sys.executable, os.path.join(RECIPE_DIR, "train.py"), *train_args],
            "train_args": train_args, "env": {},
        })
    return specs


def protocol_report(cells, runs_folder, results_folder, protocol):
    """Split lists and sizes per fold, checks that every config saw the same split, and leakage.

    Copies each fold's ``train/valid/test.lst`` to ``splits/<fold>/``. Under
    ``loso`` a test speaker or dialog found in train/valid raises
    :class:`LeakageError`; under ``random`` the overlap is reported.
    """
    import csv

    folds, leaks = {}, []
    for cell in cells:
        folder = os.path.join(runs_folder, cell.config, cell.fold)
        if not os.path.isfile(os.path.join(folder, experiments.RESULTS_FILE)):
            continue
        splits = {}
        for split in ("train", "valid", "test"):
            with open(os.path.join(folder, f"{split}.csv"), newline="") as csv_file:
                splits[split] = list(csv.DictReader(csv_file))
        digest = hashlib.sha256(
            json.dumps({s: sorted(r["ID"] for r in rows) for s, rows in splits.items()}).encode()
        ).hexdigest()[:16]
        fold = folds.setdefault(cell.fold, {"configs": {}, "splits": splits, "folder": folder})
        fold["configs"][cell.config] = digest
        if protocol == "loso":
            try:
                check_no_speaker_leakage(splits)
            except PreparationError as error:
                leaks.append(f"{cell.config} / {cell.fold}: {error}")

    report = {"protocol": protocol, "folds": {}, "leaks": leaks}
    for name, fold in sorted(folds.items()):
        splits = fold["splits"]
        shared_speakers, shared_dialogs, test_dialogs = split_overlap(splits)
        entry = {
            "sizes": {s: len(rows) for s, rows in splits.items()},
            "speakers": {s: sorted({r["spk_id"] for r in rows}) for s, rows in splits.items()},
            "test_speakers_in_train_valid": shared_speakers,
            "test_dialogs_in_train_valid": len(shared_dialogs),
            "test_dialogs": len(test_dialogs),
            "split_digest_per_config": fold["configs"],
            "same_split_for_every_config": len(set(fold["configs"].values())) == 1,
        }
        split_folder = os.path.join(results_folder, "splits", name)
        os.makedirs(split_folder, exist_ok=True)
        for split in ("train", "valid", "test"):
            shutil.copyfile(os.path.join(fold["folder"], f"{split}.lst"),
                            os.path.join(split_folder, f"{split}.lst"))
        report["folds"][name] = entry
    return report


def protocol_markdown(report):
    """``protocol.md``: one line per fold."""
    lines = [
        f"# Protocol: {report['protocol']}", "",
        "| fold | train | valid | test | test speakers | test speakers also in train/valid "
        "| test dialogs also in train/valid | same split for every config |",
        "|---|---:|---:|---:|---|---|---:|---|",
    ]
    for name, entry in report["folds"].items():
        sizes = entry["sizes"]
        lines.append(
            f"| {name} | {sizes['train']} | {sizes['valid']} | {sizes['test']} | "
            f"{', '.join(entry['speakers']['test'])} | "
            f"{', '.join(entry['test_speakers_in_train_valid']) or 'none'} | "
            f"{entry['test_dialogs_in_train_valid']} of {entry['test_dialogs']} | "
            f"{'yes' if entry['same_split_for_every_config'] else 'NO'} |"
        )
    lines += ["", "Split lists: `splits/<fold>/{train,valid,test}.lst`."]
    if report["leaks"]:
        lines += ["", "**LEAKAGE under leave-one-session-out:**", ""]
        lines += [f"- {leak}" for leak in report["leaks"]]
    return "\n".join(lines) + "\n"


def floor_results(args, cells, report, runs_folder, results_folder):
    """The floors' rows: each trained and scored on every fold's own split lists.

    Written to ``RESULTS/floors/<floor>/<fold>/test_results.json``, computed once.
    """
    if not args.floors:
        return []
    cell_of_fold = {}
    for cell in cells:
        cell_of_fold.setdefault(cell.fold, cell)
    cache, rows = {}, []
    for floor in args.floors:
        for fold, entry in report["folds"].items():
            cell = cell_of_fold[fold]
            folder = os.path.join(results_folder, "floors", floor, fold)
            path = os.path.join(folder, experiments.RESULTS_FILE)
            if not os.path.isfile(path):
                source = os.path.join(runs_folder, cell.config, cell.fold)
                with open(os.path.join(source, experiments.CELL_FILE)) as record_file:
                    train_args = json.load(record_file)["train_args"]
                data_folder = train_args[train_args.index("--data_folder") + 1]
                splits = read_split_rows(source, data_folder)
                write_floor_results(path, evaluate_floor(floor, splits, EMOTION_CLASSES, cache=cache))
            floor_cell = experiments.Cell(0.0, 0.0, cell.protocol, cell.test_session, cell.seed,
                                          label=floor)
            row = experiments.read_cell_results(floor_cell, folder, EMOTION_CLASSES)
            row["baseline"] = True
            rows.append(row)
    return rows


def write_outputs(args, cells, outcomes, runs_folder, results_folder):
    """Aggregates the finished cells and writes every output file; returns the summary."""
    report = protocol_report(cells, runs_folder, results_folder, args.protocol)
    experiments.write_json(os.path.join(results_folder, "protocol.json"), report)
    write_text_atomically(os.path.join(results_folder, "protocol.md"), protocol_markdown(report))
    if report["leaks"]:
        raise LeakageError(
            "test speakers or dialogs occur in train/valid under leave-one-session-out; no "
            "results written:\n  " + "\n  ".join(report["leaks"])
        )

    rows, failed, environments = [], [], []
    for cell in cells:
        folder = os.path.join(runs_folder, cell.config, cell.fold)
        if os.path.isfile(os.path.join(folder, experiments.RESULTS_FILE)):
            rows.append(experiments.read_cell_results(cell, folder, EMOTION_CLASSES))
            environments.append(experiments.cell_environment(folder))
        else:
            outcome = outcomes.get(folder, {})
            failed.append({"config": cell.config, "fold": cell.fold, "folder": folder,
                           "status": outcome.get("status", "not run"),
                           "attempts": outcome.get("attempts", 0),
                           "returncode": outcome.get("returncode"),
                           "log": os.path.join(folder, "runner.log")})
    floor_rows = floor_results(args, cells, report, runs_folder, results_folder)
    trained = list(rows)
    rows += floor_rows
    summaries = experiments.aggregate(rows, EMOTION_CLASSES)
    reference = REFERENCE if REFERENCE in summaries else None
    tests = experiments.paired_tests(rows, reference, skip_baselines=True) if reference else []
    for floor in args.floors:
        if floor in summaries:
            tests += experiments.paired_tests(
                trained + [r for r in floor_rows if r["config"] == floor], floor
            )

    results = {
        "study": args.study, "protocol": args.protocol, "emotion_classes": EMOTION_CLASSES,
        "configs": list(dict.fromkeys(cell.config for cell in cells)), "floors": args.floors,
        "folds": rows, "aggregates": summaries, "paired_tests": tests, "failed": failed,
    }
    if args.study == "grid":
        results["grid"] = {"alphas": args.alphas, "betas": args.betas}
        for metric in ("UA", "WA"):
            matrix = experiments.grid_matrix(summaries, args.alphas, args.betas, metric)
            results["grid"][metric] = matrix
            experiments.plot_heatmap(
                os.path.join(results_folder, f"heatmap_{metric}.png"), matrix, args.alphas,
                args.betas, metric, f"{metric} (%), {args.protocol}, mean over folds",
            )
    experiments.write_json(os.path.join(results_folder, "results.json"), results)
    experiments.write_results_csv(
        os.path.join(results_folder, "results.csv"), rows, summaries, EMOTION_CLASSES
    )
    table = experiments.markdown_table(summaries, tests, EMOTION_CLASSES, reference)
    notes = [
        f"# {args.study} ({args.protocol})", "",
        "Mean ± sample standard deviation over the folds each configuration finished; "
        "`protocol.md` lists the splits. " + experiments.environment_line(environments), "",
        "Command (in `recipes/IEMOCAP/MTLSER`):", "", "```bash", f"python run_experiments.py {args.command}",
        "```", "", table,
    ]
    differing = [n for n, e in report["folds"].items() if not e["same_split_for_every_config"]]
    if differing:
        notes += ["", f"**The configurations did not all train on the same split in folds "
                  f"{', '.join(differing)}** (see protocol.json): their comparison is not paired."]
    if failed:
        notes += ["", "**Cells that did not finish (left out of the averages):**", ""]
        notes += [f"- {f['config']} / {f['fold']}: {f['status']} after {f['attempts']} "
                  f"attempt(s), see {f['log']}" for f in failed]
    write_text_atomically(os.path.join(results_folder, "results.md"), "\n".join(notes) + "\n")
    for config, summary in summaries.items():
        experiments.plot_confusion(
            os.path.join(results_folder, f"confusion_{config}.png"), summary["confusion"],
            EMOTION_CLASSES, f"{config}, {args.protocol}, summed over {summary['n_folds']} folds",
        )
    experiments.plot_bars(os.path.join(results_folder, f"{args.study}.png"), summaries,
                          f"{args.study}, {args.protocol}: WA/UA over folds")
    return results, table


def main(argv=None):
    """Runs the study's missing cells, then writes the results; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args, overrides = parse_args(argv)
    args.command = shlex.join(a for a in argv if a != "--no_run")  # for results.md: what trains the table
    results_folder = os.path.abspath(args.results_folder)
    runs_folder = os.path.abspath(args.runs_folder or os.path.join(results_folder, "runs"))
    os.makedirs(results_folder, exist_ok=True)
    if args.data_folder is None:
        data_folder = generate_demo_corpus(os.path.dirname(os.path.join(RECIPE_DIR, DEMO_DATA_FOLDER)))
    else:
        data_folder = os.path.abspath(args.data_folder)
    cells = experiments.make_cells(study_configs(args), args.protocol, args.folds, args.seeds)
    specs = cell_specs(cells, args, overrides, data_folder, runs_folder)
    todo = [s for s in specs if not os.path.isfile(os.path.join(s["folder"], experiments.RESULTS_FILE))]
    print(f"{len(specs)} cells ({len(study_configs(args))} configs x "
          f"{len(specs) // len(study_configs(args))} folds): {len(specs) - len(todo)} finished, "
          f"{len(todo)} to run" + (" (--no_run: none launched)" if args.no_run else ""), flush=True)
    outcomes = {}
    if todo and not args.no_run:
        for spec in todo:
            os.makedirs(spec["folder"], exist_ok=True)
            experiments.write_json(os.path.join(spec["folder"], experiments.CELL_FILE),
                                   {"train_args": spec["train_args"]})
        gpus = args.gpus
        if gpus is None:
            gpus = 0
            if args.launcher == "local":
                import torch

                gpus = torch.cuda.device_count()
        launched = [{k: v for k, v in s.items() if k not in ("cell", "train_args")} for s in todo]
        submitit_options = {
            "folder": os.path.join(results_folder, "submitit", "%j"),
            "cluster": args.submitit_cluster, "timeout_min": args.timeout_min,
            "slurm_partition": args.slurm_partition, "gpus_per_node": 1 if gpus else 0,
        }
        results = experiments.launch(
            launched, args.launcher, jobs=args.jobs, gpus=gpus, ray_address=args.ray_address,
            submitit_options={k: v for k, v in submitit_options.items() if v is not None},
        )
        for outcome in results:
            outcomes[outcome["folder"]] = outcome
            if outcome["status"] != "finished":
                print(f"FAILED after {outcome['attempts']} attempt(s): {outcome['folder']} "
                      f"(exit {outcome['returncode']}), log: {outcome['log']}", flush=True)
    try:
        results, table = write_outputs(args, cells, outcomes, runs_folder, results_folder)
    except LeakageError as error:
        print(f"LEAKAGE: {error}", file=sys.stderr, flush=True)
        return 2
    print(table)
    print(f"results in {results_folder} (results.md, results.csv, results.json, protocol.md, PNGs)")
    if results["failed"]:
        print(f"{len(results['failed'])} cell(s) did not finish and are left out of the "
              "averages: see results.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
