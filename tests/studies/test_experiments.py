"""run_experiments.py: a 2x2 loss-weight grid over 2 leave-one-session-out folds, end to end.

The study trains 8 real cells (tiny encoder, demo corpus, 1 epoch) once per
module; the tests then read its outputs, resume it, break it and check that
nothing wrong is averaged in.
"""

import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys

import pytest
import speechbrain
import torch

from conftest import RECIPE_DIR
from recipe_helpers import TINY_ENCODER_OVERRIDES

pytestmark = pytest.mark.slow

ALPHAS, BETAS, FOLDS = ["0", "0.1"], ["0", "0.1"], ["4", "5"]
FLOORS = ["majority", "mfcc_logreg", "fbank_logreg"]
CONFIGS = [f"alpha{a}_beta{b}" for a in ALPHAS for b in BETAS]
FOLD_NAMES = [f"session{s}_seed1986" for s in FOLDS]


def run_study(args, timeout=900):
    """``python run_experiments.py hparams/mtl.yaml ARGS`` in the recipe folder."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "run_experiments.py", "hparams/mtl.yaml", *args],
        cwd=RECIPE_DIR, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_encoder, demo_release):
    """Runs the grid once; returns its results folder and the command's arguments."""
    results = str(tmp_path_factory.mktemp("study"))
    args = [
        "--study", "grid", "--alphas", *ALPHAS, "--betas", *BETAS, "--folds", *FOLDS,
        "--results_folder", results, "--data_folder", demo_release, "--jobs", "2",
        "--wav2vec2_hub", tiny_encoder, "--number_of_epochs", "1", *TINY_ENCODER_OVERRIDES,
    ]
    result = run_study(args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "8 cells (4 configs x 2 folds): 0 finished, 8 to run" in result.stdout
    return {"folder": results, "args": args, "data_folder": demo_release}


def cell_folder(study, config, fold):
    return os.path.join(study["folder"], "runs", config, fold)


def read_csv(path):
    with open(path, newline="") as csv_file:
        return list(csv.DictReader(csv_file))


def test_grid_writes_every_output(study):
    folder = study["folder"]
    rows = read_csv(os.path.join(folder, "results.csv"))
    folds = [(r["config"], r["fold"]) for r in rows if r["kind"] == "fold"]
    assert sorted(folds) == sorted((c, f) for c in CONFIGS + FLOORS for f in FOLD_NAMES)
    assert {r["config"] for r in rows if r["baseline"] == "True"} == set(FLOORS)
    for kind in ("mean", "std"):
        assert sorted(r["config"] for r in rows if r["kind"] == kind) == sorted(CONFIGS + FLOORS)
        assert all(r["n_folds"] == "2" for r in rows if r["kind"] == kind)
    results = json.load(open(os.path.join(folder, "results.json")))
    assert results["failed"] == [] and len(results["folds"]) == 8 + 2 * len(FLOORS)
    assert sorted(results["aggregates"]) == sorted(CONFIGS + FLOORS)
    # Paired tests against emotion-only (3 configs) and against each floor (4 configs), x (UA, WA)
    assert {(t["reference"], t["config"], t["metric"]) for t in results["paired_tests"]} == {
        ("alpha0_beta0", c, m) for c in CONFIGS[1:] for m in ("UA", "WA")
    } | {(floor, c, m) for floor in FLOORS for c in CONFIGS for m in ("UA", "WA")}
    assert all(t["n_pairs"] == 2 for t in results["paired_tests"])
    table = open(os.path.join(folder, "results.md")).read()
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| config | alpha | beta"))
    main_table = lines[header + 2:lines.index("", header)]
    assert sorted(line.split(" | ")[0][2:] for line in main_table if not line.startswith("| floor: ")) \
        == sorted(CONFIGS)
    assert sorted(line.split(" | ")[0][2:] for line in main_table if line.startswith("| floor: ")) \
        == sorted(f"floor: {f}" for f in FLOORS)
    assert "Paired tests against mfcc_logreg" in table and "Wilcoxon p" in table
    # What reproduces the table: the command, and what trained its cells (from their env.log)
    assert f"python run_experiments.py {shlex.join(['hparams/mtl.yaml', *study['args']])}\n" in table
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RECIPE_DIR, capture_output=True,
                            text=True).stdout.strip()
    assert (f"Trained at commit {commit or 'unknown'} with torch {torch.__version__.split('+')[0]} and "
            f"SpeechBrain {speechbrain.__version__} on {'CUDA' if torch.cuda.is_available() else 'CPU'} (8 cells).") in table
    for config in CONFIGS:
        assert os.path.getsize(os.path.join(folder, f"confusion_{config}.png")) > 0
    assert os.path.getsize(os.path.join(folder, "grid.png")) > 0
    # The protocol report: split lists per fold, identical to the cells', no leak
    protocol = json.load(open(os.path.join(folder, "protocol.json")))
    assert protocol["leaks"] == [] and sorted(protocol["folds"]) == FOLD_NAMES
    for fold in FOLD_NAMES:
        entry = protocol["folds"][fold]
        assert entry["same_split_for_every_config"] and entry["test_speakers_in_train_valid"] == []
        for split in ("train", "valid", "test"):
            copied = open(os.path.join(folder, "splits", fold, f"{split}.lst")).read()
            assert copied == open(os.path.join(cell_folder(study, CONFIGS[0], fold), f"{split}.lst")).read()
            assert len(copied.split()) == entry["sizes"][split]


def test_floors_are_trained_on_each_folds_own_split(study):
    from mtlser_lobes.studies.baselines import evaluate_floor, read_split_rows

    results = json.load(open(os.path.join(study["folder"], "results.json")))
    for fold in FOLD_NAMES:
        rows = {r["config"]: r for r in results["folds"] if r["fold"] == fold}
        # majority class: one class predicted, so UA is exactly chance
        assert rows["majority"]["UA"] == pytest.approx(25.0)
        splits = read_split_rows(cell_folder(study, CONFIGS[0], fold), study["data_folder"])
        again = evaluate_floor("mfcc_logreg", splits, ["neu", "hap", "ang", "sad"])
        assert rows["mfcc_logreg"]["UA"] == pytest.approx(again["UA"])
        assert sum(map(sum, again["confusion"])) == len(splits["test"])
        assert 0 <= rows["mfcc_logreg"]["best_valid_UA"] <= 100


def test_aggregates_equal_a_recomputation_from_the_fold_jsons(study):
    results = json.load(open(os.path.join(study["folder"], "results.json")))
    mean_rows = {r["config"]: r for r in read_csv(os.path.join(study["folder"], "results.csv"))
                 if r["kind"] == "mean"}
    for config in CONFIGS:
        folds = [json.load(open(os.path.join(cell_folder(study, config, f), "test_results.json")))
                 for f in FOLD_NAMES]
        summary = results["aggregates"][config]
        for metric in ("WA", "UA"):
            values = [fold[metric] for fold in folds]
            assert summary["mean"][metric] == pytest.approx(statistics.mean(values))
            assert summary["std"][metric] == pytest.approx(statistics.stdev(values))
            assert float(mean_rows[config][metric]) == pytest.approx(statistics.mean(values), abs=1e-4)
        recall = [100 * fold["recall"]["sad"] for fold in folds]
        assert summary["mean"]["recall_sad"] == pytest.approx(statistics.mean(recall))
        if config.startswith("alpha0.1"):
            cer = [fold["CER"] for fold in folds]
            assert summary["mean"]["CER"] == pytest.approx(statistics.mean(cer))
        else:
            assert "CER" not in summary["mean"]
        confusion = [[sum(f["confusion"][i][j] for f in folds) for j in range(4)] for i in range(4)]
        assert summary["confusion"] == confusion
        assert sum(map(sum, confusion)) == sum(fold["n_utterances"] for fold in folds)


def test_pooling_replicates_counts_each_fold_once_and_pairs_by_fold(study):
    """pool_studies.py over the same study twice: every fold once, its own means, signs and zero recalls."""
    results = json.load(open(os.path.join(study["folder"], "results.json")))
    pooled = subprocess.run(
        [sys.executable, "pool_studies.py", study["folder"], study["folder"], "--configs", "alpha0_beta0",
         "alpha0.1_beta0.1"], cwd=RECIPE_DIR, capture_output=True, text=True, timeout=120)
    assert pooled.returncode == 0, pooled.stderr[-3000:]
    summary = results["aggregates"]["alpha0.1_beta0.1"]
    assert "| alpha0.1_beta0.1 | 0.1 | 0.1 | 2 |" in pooled.stdout
    assert f"{summary['mean']['UA']:.2f} ± {summary['std']['UA']:.2f}" in pooled.stdout
    folds = {r["fold"]: r for r in results["folds"] if r["config"] == "alpha0.1_beta0.1"}
    reference = {r["fold"]: r for r in results["folds"] if r["config"] == "alpha0_beta0"}
    differences = [folds[f]["UA"] - reference[f]["UA"] for f in folds]
    signs = f"{sum(d > 0 for d in differences)} / {sum(d == 0 for d in differences)} / {sum(d < 0 for d in differences)}"
    zero = sum(any(folds[f][f"recall_{c}"] == 0 for c in results["emotion_classes"]) for f in folds)
    assert f"| alpha0.1_beta0.1 | {signs} | {zero} of 2 |" in pooled.stdout
    missing = subprocess.run([sys.executable, "pool_studies.py", study["folder"], "--reference", "alpha9_beta9"],
                             cwd=RECIPE_DIR, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "--reference alpha9_beta9 is not among" in missing.stderr


def test_heatmaps_have_the_grid_shape(study):
    import matplotlib.image

    results = json.load(open(os.path.join(study["folder"], "results.json")))
    grid = results["grid"]
    assert grid["alphas"] == [0.0, 0.1] and grid["betas"] == [0.0, 0.1]
    for metric in ("UA", "WA"):
        assert [len(row) for row in grid[metric]] == [len(BETAS)] * len(ALPHAS)
        for i, alpha in enumerate(ALPHAS):
            for j, beta in enumerate(BETAS):
                expected = results["aggregates"][f"alpha{alpha}_beta{beta}"]["mean"][metric]
                assert grid[metric][i][j] == pytest.approx(expected)
        image = matplotlib.image.imread(os.path.join(study["folder"], f"heatmap_{metric}.png"))
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_resuming_skips_finished_cells_and_reruns_the_missing_one(study):
    results_files = {
        (c, f): os.path.join(cell_folder(study, c, f), "test_results.json")
        for c in CONFIGS for f in FOLD_NAMES
    }
    before = {key: os.stat(path).st_mtime_ns for key, path in results_files.items()}
    result = run_study(study["args"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 finished, 0 to run" in result.stdout
    assert before == {key: os.stat(path).st_mtime_ns for key, path in results_files.items()}

    missing = (CONFIGS[3], FOLD_NAMES[1])
    os.remove(results_files[missing])
    result = run_study(study["args"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "7 finished, 1 to run" in result.stdout
    after = {key: os.stat(path).st_mtime_ns for key, path in results_files.items()}
    assert [key for key in before if after[key] != before[key]] == [missing]


def test_other_train_arguments_are_refused_not_mixed_in(study):
    args = list(study["args"])
    args[args.index("--number_of_epochs") + 1] = "2"
    result = run_study(args)
    assert result.returncode != 0
    assert "was run with other arguments" in result.stderr


def test_a_crashing_cell_is_retried_reported_and_left_out(study):
    config, fold = CONFIGS[1], FOLD_NAMES[0]
    folder = cell_folder(study, config, fold)
    backup = str(study["folder"]) + "_backup"
    shutil.copytree(folder, backup)
    try:
        os.remove(os.path.join(folder, "test_results.json"))
        with open(os.path.join(folder, "train.csv"), "w") as broken:
            broken.write("not,a,recipe,csv\n1,2,3,4\n")
        result = run_study(study["args"])
        assert result.returncode == 1
        assert f"FAILED after 2 attempt(s): {folder}" in result.stdout
        log = open(os.path.join(folder, "runner.log")).read()
        assert "=== attempt 2 exited with 1" in log
        results = json.load(open(os.path.join(study["folder"], "results.json")))
        assert [(f["config"], f["fold"]) for f in results["failed"]] == [(config, fold)]
        summary = results["aggregates"][config]
        assert summary["n_folds"] == 1 and summary["folds"] == [FOLD_NAMES[1]]
        other = json.load(open(os.path.join(cell_folder(study, config, FOLD_NAMES[1]),
                                            "test_results.json")))
        assert summary["mean"]["UA"] == pytest.approx(other["UA"])
        assert summary["std"]["UA"] is None
        assert f"{config} / {fold}: failed after 2 attempt(s)" in open(
            os.path.join(study["folder"], "results.md")).read()
    finally:
        shutil.rmtree(folder)
        shutil.copytree(backup, folder)
        shutil.rmtree(backup)


def test_leakage_under_loso_stops_the_study(study):
    folder = cell_folder(study, CONFIGS[2], FOLD_NAMES[1])
    train_csv = os.path.join(folder, "train.csv")
    original = open(train_csv).read()
    results_json = os.path.join(study["folder"], "results.json")
    results_before = open(results_json).read()
    test_row = open(os.path.join(folder, "test.csv")).read().splitlines()[1]
    try:
        with open(train_csv, "a") as planted:
            planted.write(test_row + "\n")
        result = run_study(study["args"])
        assert result.returncode == 2
        assert "LEAKAGE" in result.stderr and test_row.split(",")[0].rsplit("_", 1)[0] in result.stderr
        assert "LEAKAGE" in open(os.path.join(study["folder"], "protocol.md")).read()
        assert open(results_json).read() == results_before  # nothing published from a leaky study
    finally:
        with open(train_csv, "w") as restored:
            restored.write(original)


def test_submitit_launcher_runs_a_cell(tmp_path, tiny_encoder, demo_release):
    pytest.importorskip("submitit")
    result = run_study([
        "--study", "single", "--alpha", "0.1", "--beta", "0", "--folds", "5",
        "--results_folder", str(tmp_path), "--data_folder", demo_release,
        "--launcher", "submitit", "--submitit_cluster", "local", "--timeout_min", "10",
        "--wav2vec2_hub", tiny_encoder, "--number_of_epochs", "1", *TINY_ENCODER_OVERRIDES,
    ])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.load(open(tmp_path / "results.json"))
    trained = [(r["config"], r["fold"]) for r in results["folds"] if not r.get("baseline")]
    assert trained == [("alpha0.1_beta0", FOLD_NAMES[1])]
    assert os.listdir(tmp_path / "submitit")  # submitit's own job folder


def test_lever_study_adds_named_variants_beside_the_reference(study):
    """--study levers: emotion only, the multi-task default and each --variant, on the same folds.

    Shares the grid's cells (same --runs_folder and options): only the variant trains.
    """
    args = list(study["args"])
    args[args.index("--study") + 1] = "levers"
    args[args.index("--results_folder") + 1] = os.path.join(study["folder"], "levers")
    for option in ("--alphas", "--betas"):
        i = args.index(option)
        del args[i:i + 3]
    args += ["--runs_folder", os.path.join(study["folder"], "runs"), "--alpha", "0.1", "--beta", "0.1",
             "--variant", "balanced", "--class_balanced_loss True", "--floors", "majority"]
    result = run_study(args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 cells (3 configs x 2 folds): 4 finished, 2 to run" in result.stdout
    results = json.load(open(os.path.join(study["folder"], "levers", "results.json")))
    assert results["configs"] == ["alpha0_beta0", "alpha0.1_beta0.1", "balanced"]
    record = json.load(open(os.path.join(cell_folder(study, "balanced", FOLD_NAMES[0]), "cell.json")))
    assert record["train_args"][-2:] == ["--class_balanced_loss", "True"]
    assert "class-balanced emotion loss" in open(
        os.path.join(cell_folder(study, "balanced", FOLD_NAMES[0]), "runner.log")).read()
    table = open(os.path.join(study["folder"], "levers", "results.md")).read()
    assert "| balanced | 0.1 | 0.1 | 2 |" in table and "`balanced`: `--class_balanced_loss True`" in table
    bad = run_study(args[:-5] + ["--variant", "x", "--alpha 1"])
    assert bad.returncode == 2 and "set per cell by the study" in bad.stderr


def test_each_cell_gets_the_speaker_count_of_its_training_sessions(tmp_path):
    """The runner types --n_speakers for every cell: 8 of 10 speakers under loso, 6 when a variant
    validates on a whole session (--valid_split session), 10 under the random protocol."""
    import run_experiments
    from iemocap_tree import build_tree

    release = build_tree(str(tmp_path / "corpus"))
    argv = ["hparams/mtl.yaml", "--results_folder", str(tmp_path / "study"), "--study", "levers",
            "--alpha", "0.1", "--beta", "0.1", "--folds", "1", "--variant", "by_session", "--valid_split session"]
    for protocol, expected in (("loso", {"alpha0_beta0": "8", "alpha0.1_beta0.1": "8", "by_session": "6"}),
                               ("random", {"alpha0_beta0": "10", "alpha0.1_beta0.1": "10"})):
        protocol_argv = argv if protocol == "loso" else argv[:-3] + ["--protocol", "random"]
        args, overrides = run_experiments.parse_args(protocol_argv)
        cells = run_experiments.experiments.make_cells(
            run_experiments.study_configs(args), args.protocol, args.folds, args.seeds)
        specs = run_experiments.cell_specs(cells, args, overrides, release, str(tmp_path / "runs"))
        counts = {spec["cell"].config: run_experiments.option_value(spec["train_args"], "n_speakers")
                  for spec in specs}
        assert counts == expected
    # One the user typed is kept, for every cell
    args, overrides = run_experiments.parse_args(argv + ["--n_speakers", "7"])
    cells = run_experiments.experiments.make_cells(run_experiments.study_configs(args), "loso", [1], [1986])
    specs = run_experiments.cell_specs(cells, args, overrides, release, str(tmp_path / "runs"))
    assert [spec["train_args"].count("--n_speakers") for spec in specs] == [1, 1, 1]
    assert {run_experiments.option_value(spec["train_args"], "n_speakers") for spec in specs} == {"7"}
