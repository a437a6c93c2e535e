"""Cross-validation studies: cells, launchers, aggregation, paired tests, tables and plots.

A study is a set of loss-weight configurations ``(alpha, beta)``, each trained
once per fold. A *cell* is one training: one configuration on one fold. Under
leave-one-session-out a fold is a held-out session; under the random
utterance-level protocol it is a seed (a different random split). Every cell
is one run of the recipe's ``train.py`` in its own output folder, so a cell
that finished is recognised by its ``test_results.json`` and skipped, and a
cell that crashed is retried, where ``train.py`` resumes from its last
checkpoint.

The recipe's ``run_experiments.py`` is the command line; this module holds the
parts that do not depend on the recipe's files.

Authors
 * MTLSER developers
"""

import concurrent.futures
import csv
import json
import math
import os
import queue
import subprocess
import time
from dataclasses import asdict, dataclass

import numpy as np

from mtlser_lobes.artifacts import TEST_RESULTS

from mtlser_lobes.helpers import write_text_atomically

#: Metrics averaged over folds (those missing from a cell's results are skipped).
METRICS = ("WA", "UA", "CER", "WER", "speaker_acc", "best_valid_UA")
#: File a finished cell writes last (through a rename, so it is never half-written).
RESULTS_FILE = TEST_RESULTS
#: Record of how a cell was launched, to refuse mixing runs of different commands.
CELL_FILE = "cell.json"
LAUNCHERS = ("local", "ray", "submitit")


def config_name(alpha, beta):
    """Folder name of a loss-weight configuration.

    Example
    -------
    >>> config_name(0.1, 0.0)
    'alpha0.1_beta0'
    """
    return f"alpha{alpha:g}_beta{beta:g}"


@dataclass(frozen=True)
class Cell:
    """One training of a study: a configuration on a fold.

    A configuration is ``(alpha, beta)``, optionally with a ``label`` and extra
    ``train.py`` options (``overrides``): the rows of a lever study.

    Example
    -------
    >>> cell = Cell(alpha=0.1, beta=0.0, protocol="loso", test_session=3, seed=1986)
    >>> cell.config, cell.fold
    ('alpha0.1_beta0', 'session3_seed1986')
    >>> Cell(alpha=0, beta=0, protocol="random", test_session=5, seed=7).fold
    'seed7'
    >>> Cell(0.1, 0.1, "loso", 1, 1986, label="ctc_lstm", overrides=("--ctc_block", "lstm")).config
    'ctc_lstm'
    """

    alpha: float
    beta: float
    protocol: str
    test_session: int
    seed: int
    label: str = ""
    overrides: tuple = ()

    @property
    def config(self):
        """Name of the configuration: its label, or ``alpha<a>_beta<b>``."""
        return self.label or config_name(self.alpha, self.beta)

    @property
    def fold(self):
        """Name of the fold: held-out session and seed, or seed alone (random split)."""
        if self.protocol == "random":
            return f"seed{self.seed}"
        return f"session{self.test_session}_seed{self.seed}"


def make_cells(configs, protocol, test_sessions, seeds):
    """Every configuration of ``configs`` crossed with every fold, in ``configs`` order.

    A configuration is ``(alpha, beta)`` or ``(alpha, beta, label, overrides)``.

    Under ``random`` the folds are the seeds alone (the held-out session is unused).

    Example
    -------
    >>> cells = make_cells([(0, 0), (0.1, 0)], "loso", [1, 2], [1986])
    >>> [(c.config, c.fold) for c in cells]  # doctest: +NORMALIZE_WHITESPACE
    [('alpha0_beta0', 'session1_seed1986'), ('alpha0_beta0', 'session2_seed1986'),
     ('alpha0.1_beta0', 'session1_seed1986'), ('alpha0.1_beta0', 'session2_seed1986')]
    >>> len(make_cells([(0, 0)], "random", [1, 2, 3], [1, 2]))
    2
    """
    sessions = test_sessions if protocol == "loso" else test_sessions[-1:]
    cells = []
    for config in configs:
        alpha, beta, label, overrides = (tuple(config) + ("", ()))[:4]
        cells += [
            Cell(float(alpha), float(beta), protocol, int(session), int(seed), label,
                 tuple(overrides))
            for session in sessions for seed in seeds
        ]
    return cells


# ------------------------------------------------------------------ running


def run_cell(spec):
    """Runs one cell's command until it succeeds or its attempts are spent.

    A retry runs the same command again: ``train.py`` resumes from the last
    checkpoint it saved. Output goes to ``<folder>/runner.log``. The function
    is module-level so that Ray and submitit can ship it to workers.

    Arguments
    ---------
    spec : dict
        ``folder``, ``command`` (argv list), ``cwd``, ``env`` (extra variables),
        ``attempts``.

    Returns
    -------
    dict
        ``folder``, ``status`` ("finished" or "failed"), ``attempts`` made,
        ``returncode`` of the last attempt, ``seconds`` in all, ``log``.
    """
    folder = spec["folder"]
    os.makedirs(folder, exist_ok=True)
    log_path = os.path.join(folder, "runner.log")
    env = dict(os.environ, **spec.get("env", {}))
    start = time.time()
    returncode = None
    attempts = 0
    for attempts in range(1, spec["attempts"] + 1):
        with open(log_path, "a") as log:
            log.write(f"=== attempt {attempts}: {' '.join(spec['command'])}\n")
            log.flush()
            returncode = subprocess.call(
                spec["command"], cwd=spec["cwd"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            log.write(f"=== attempt {attempts} exited with {returncode}\n")
        if returncode == 0 and os.path.isfile(os.path.join(folder, RESULTS_FILE)):
            break
    finished = returncode == 0 and os.path.isfile(os.path.join(folder, RESULTS_FILE))
    return {
        "folder": folder,
        "status": "finished" if finished else "failed",
        "attempts": attempts,
        "returncode": returncode,
        "seconds": round(time.time() - start, 1),
        "log": log_path,
    }


def launch(specs, launcher="local", jobs=1, gpus=0, ray_address=None, submitit_options=None,
           progress=True):
    """Runs cell specs through the chosen engine; returns their outcomes in order.

    Arguments
    ---------
    specs : list of dict
        Inputs of :func:`run_cell`.
    launcher : str
        ``"local"``: ``jobs`` concurrent processes on this machine (with
        ``gpus`` > 0, each cell is given one GPU through
        ``CUDA_VISIBLE_DEVICES``, at most one cell per GPU at a time);
        ``"ray"``: one Ray task per cell (``ray.init(address=ray_address)``,
        ``num_gpus=1`` each when ``gpus`` > 0); ``"submitit"``: one job-array
        task per cell, Slurm by default (``submitit_options`` are passed to
        ``AutoExecutor.update_parameters``; ``cluster`` among them selects
        ``"local"`` or ``"debug"`` instead).
    jobs : int
        Concurrent cells of the local launcher.
    gpus : int
        GPUs on this machine (local) or per cell (Ray: 1 when > 0).
    ray_address : str, optional
        Address of a running Ray cluster; None starts a local one.
    submitit_options : dict, optional
        ``folder`` (where submitit keeps its logs, required), ``cluster``, and
        the parameters of ``AutoExecutor.update_parameters``.
    progress : bool
        Show a tqdm bar (local launcher).

    Returns
    -------
    list of dict
        Outcomes of :func:`run_cell`.
    """
    if not specs:
        return []
    if launcher == "local":
        return _launch_local(specs, jobs, gpus, progress)
    if launcher == "ray":
        import ray

        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False)
        remote = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(run_cell)
        return ray.get([remote.remote(spec) for spec in specs])
    if launcher == "submitit":
        import submitit

        options = dict(submitit_options or {})
        folder = options.pop("folder")
        cluster = options.pop("cluster", None)
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
        if options:
            executor.update_parameters(**options)
        submitted = executor.map_array(run_cell, specs)
        return [job.result() for job in submitted]
    raise ValueError(f"launcher must be one of {LAUNCHERS}, not {launcher!r}")


def _launch_local(specs, jobs, gpus, progress):
    """``jobs`` worker threads, each waiting on one ``train.py`` process at a time."""
    from tqdm import tqdm

    free_gpus = queue.Queue()
    for index in range(gpus):
        free_gpus.put(index)
    threads_per_cell = max(1, (os.cpu_count() or 1) // max(1, jobs))

    def run_with_device(spec):
        spec = dict(spec, env=dict(spec.get("env", {})))
        if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
            spec["env"]["OMP_NUM_THREADS"] = str(threads_per_cell)
        if gpus:
            gpu = free_gpus.get()
            spec["env"]["CUDA_VISIBLE_DEVICES"] = str(gpu)
            try:
                return run_cell(spec)
            finally:
                free_gpus.put(gpu)
        return run_cell(spec)

    workers = max(1, min(jobs, gpus) if gpus else jobs)
    outcomes = [None] * len(specs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_with_device, spec): i for i, spec in enumerate(specs)}
        bar = tqdm(total=len(specs), desc="cells", unit="cell", disable=not progress)
        for future in concurrent.futures.as_completed(futures):
            outcomes[futures[future]] = future.result()
            bar.set_postfix_str(f"last: {outcomes[futures[future]]['status']}")
            bar.update()
        bar.close()
    return outcomes


# -------------------------------------------------------------- aggregation


def read_cell_results(cell, folder, emotion_classes=None):
    """One row of ``results.csv`` from a finished cell's ``test_results.json``."""
    with open(os.path.join(folder, RESULTS_FILE)) as results_file:
        results = json.load(results_file)
    classes = emotion_classes or results["emotion_classes"]
    row = {"kind": "fold", **asdict(cell), "config": cell.config, "fold": cell.fold}
    row["overrides"] = " ".join(cell.overrides)
    row["best_valid_UA"] = results.get("best_valid_UA")
    for metric in METRICS:
        row[metric] = results.get(metric)
    for name in classes:
        row[f"recall_{name}"] = 100 * results["recall"][name]
    row["n_utterances"] = results["n_utterances"]
    row["epoch"] = results["epoch"]
    row["confusion"] = results["confusion"]
    return row


def cell_environment(folder):
    r"""What trained a cell: its ``test_results.json`` and the ``env.log`` SpeechBrain writes.

    Returns
    -------
    dict
        ``commit`` (the short git revision of the recipe, or None), ``torch``,
        ``speechbrain`` (versions, or None) and ``device`` (``CPU`` or ``CUDA``).

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, "env.log"), "w").write(
    ...     "speechbrain==1.1.2\ntorch==2.11.0\nGit revision:\nabc1234\n=====\nCUDA not available")
    >>> cell_environment(folder)
    {'commit': 'abc1234', 'torch': '2.11.0', 'speechbrain': '1.1.2', 'device': 'CPU'}
    """
    found = {"commit": None, "torch": None, "speechbrain": None, "device": None}
    path = os.path.join(folder, "env.log")
    lines = []
    if os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as fin:
            lines = [line.strip() for line in fin]
    for i, line in enumerate(lines):
        for package in ("torch", "speechbrain"):
            if line.startswith(f"{package}=="):
                found[package] = line.split("==", 1)[1].split("+")[0]
        if line == "Git revision:" and i + 1 < len(lines) and lines[i + 1] and not lines[i + 1].startswith("="):
            found["commit"] = lines[i + 1]
        if line == "CUDA not available":
            found["device"] = "CPU"
        if line in ("CUDA version:", "ROCm version:"):
            found["device"] = "CUDA"
    # What the training process itself recorded wins (env.log's packages are those of the
    # ``pip`` on PATH, which need not be the environment that trained)
    results_path = os.path.join(folder, RESULTS_FILE)
    if os.path.isfile(results_path):
        with open(results_path, encoding="utf-8") as fin:
            recorded = json.load(fin).get("environment") or {}
        for key in ("torch", "speechbrain"):
            if recorded.get(key):
                found[key] = recorded[key].split("+")[0]
        if recorded.get("device"):
            found["device"] = "CUDA" if recorded["device"] == "cuda" else recorded["device"].upper()
    return found


def environment_line(environments):
    """One sentence naming what trained the cells: commits, torch, SpeechBrain, device.

    Example
    -------
    >>> environment_line([{"commit": "abc1234", "torch": "2.11.0", "speechbrain": "1.1.2", "device": "CPU"}] * 2)
    'Trained at commit abc1234 with torch 2.11.0 and SpeechBrain 1.1.2 on CPU (2 cells).'
    """
    environments = [e for e in environments if any(e.values())]
    if not environments:
        return "No cell recorded its environment (env.log)."

    def values(key):
        counts = {}
        for environment in environments:
            value = environment.get(key) or "unknown"
            counts[value] = counts.get(value, 0) + 1
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{value} ({n} cells)" for value, n in counts.items())

    commits = values("commit")
    return (f"Trained at commit{'s' if ',' in commits else ''} {commits} with torch {values('torch')} and "
            f"SpeechBrain {values('speechbrain')} on {values('device')} ({len(environments)} cells).")


def aggregate(rows, emotion_classes):
    """Mean, sample standard deviation (ddof=1) and summed confusion per configuration.

    Arguments
    ---------
    rows : list of dict
        Fold rows from :func:`read_cell_results`.
    emotion_classes : list of str
        Class order of the confusion matrices.

    Returns
    -------
    dict
        Configuration -> ``alpha``, ``beta``, ``n_folds``, ``folds``,
        ``mean`` and ``std`` (metric -> value or None), ``confusion``.

    Example
    -------
    >>> rows = [{"config": "c", "alpha": 0.0, "beta": 0.0, "fold": f, "UA": ua, "WA": ua,
    ...          "confusion": [[1, 0], [0, 1]]} for f, ua in (("a", 50.0), ("b", 60.0))]
    >>> summary = aggregate(rows, ["x", "y"])["c"]
    >>> summary["mean"]["UA"], round(summary["std"]["UA"], 3), summary["confusion"]
    (55.0, 7.071, [[2, 0], [0, 2]])
    """
    metrics = list(METRICS) + [f"recall_{name}" for name in emotion_classes]
    summaries = {}
    for row in rows:
        summary = summaries.setdefault(row["config"], {
            "alpha": row["alpha"], "beta": row["beta"], "folds": [], "values": {},
            "overrides": row.get("overrides", ""), "baseline": bool(row.get("baseline")),
            "confusion": np.zeros((len(emotion_classes),) * 2, dtype=int),
        })
        summary["folds"].append(row["fold"])
        summary["confusion"] += np.asarray(row["confusion"], dtype=int)
        for metric in metrics:
            if row.get(metric) is not None:
                summary["values"].setdefault(metric, []).append(float(row[metric]))
    for summary in summaries.values():
        values = summary.pop("values")
        summary["n_folds"] = len(summary["folds"])
        summary["mean"] = {m: float(np.mean(v)) for m, v in values.items()}
        summary["std"] = {
            m: float(np.std(v, ddof=1)) if len(v) > 1 else None for m, v in values.items()
        }
        summary["confusion"] = summary["confusion"].tolist()
    return summaries


def _rows_by_config(rows):
    """Fold rows as ``{config: {fold: row}}``."""
    by_config = {}
    for row in rows:
        by_config.setdefault(row["config"], {})[row["fold"]] = row
    return by_config


def _paired_values(by_config, config, reference, metric):
    """``(config's, reference's)`` ``metric`` on every fold both have it for, in fold order."""
    ours, theirs = by_config.get(config, {}), by_config.get(reference, {})
    return [(ours[f][metric], theirs[f][metric]) for f in sorted(set(ours) & set(theirs))
            if ours[f].get(metric) is not None and theirs[f].get(metric) is not None]


def paired_tests(rows, reference, metrics=("UA", "WA"), skip_baselines=False):
    """Wilcoxon signed-rank and paired t tests of each configuration against ``reference``.

    Folds are paired by name; only folds finished under both configurations
    count. With 5 folds the smallest two-sided Wilcoxon p-value is 0.0625.

    Returns
    -------
    list of dict
        ``config``, ``metric``, ``n_pairs``, ``mean_difference``,
        ``wilcoxon_p``, ``paired_t_p`` (None where undefined: fewer than two
        pairs, or all differences zero for the t test).
    """
    from scipy import stats

    by_config = _rows_by_config(rows)
    if reference not in by_config:
        return []
    tests = []
    for config in by_config:
        if config == reference:
            continue
        if skip_baselines and any(r.get("baseline") for r in by_config[config].values()):
            continue
        for metric in metrics:
            pairs = _paired_values(by_config, config, reference, metric)
            differences = np.array([a - b for a, b in pairs])
            test = {
                "config": config, "reference": reference, "metric": metric,
                "n_pairs": len(pairs),
                "mean_difference": float(differences.mean()) if len(pairs) else None,
                "wilcoxon_p": None, "paired_t_p": None,
            }
            if len(pairs) >= 2:
                if np.any(differences != 0):
                    test["wilcoxon_p"] = float(stats.wilcoxon(differences).pvalue)
                else:
                    test["wilcoxon_p"] = 1.0
                t_p = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue
                test["paired_t_p"] = None if math.isnan(t_p) else float(t_p)
            tests.append(test)
    return tests


def pool_fold_rows(studies, configs=None):
    """The fold rows of several studies (their ``results.json``), each configuration and fold once.

    A replicate with other seeds (``--seeds``) is a study of its own; pooled, a
    configuration has every (session, seed) fold that any of the studies
    finished, and :func:`paired_tests` pairs them by fold. A fold found in two
    studies is the same cell, so its UA must agree.

    Arguments
    ---------
    studies : list of dict
        Loaded ``results.json`` files (their ``folds`` lists).
    configs : list of str, optional
        Keep only these configurations (floors included by name).

    Returns
    -------
    list of dict
        Fold rows, in the order first seen.

    Example
    -------
    >>> a = {"folds": [{"config": "c", "fold": "session1_seed1", "UA": 50.0},
    ...                {"config": "d", "fold": "session1_seed1", "UA": 40.0}]}
    >>> b = {"folds": [{"config": "c", "fold": "session1_seed7", "UA": 55.0},
    ...                {"config": "c", "fold": "session1_seed1", "UA": 50.0}]}
    >>> [(r["config"], r["fold"]) for r in pool_fold_rows([a, b], configs=["c"])]
    [('c', 'session1_seed1'), ('c', 'session1_seed7')]
    >>> b["folds"][1]["UA"] = 51.0
    >>> pool_fold_rows([a, b])
    Traceback (most recent call last):
    ...
    ValueError: c session1_seed1: UA 51.0 here, 50.0 in an earlier study; not the same cell
    """
    rows = {}
    for study in studies:
        for row in study["folds"]:
            if configs is not None and row["config"] not in configs:
                continue
            key = (row["config"], row["fold"])
            if key in rows and rows[key]["UA"] != row["UA"]:
                raise ValueError(f"{key[0]} {key[1]}: UA {row['UA']} here, {rows[key]['UA']} in an "
                                 "earlier study; not the same cell")
            rows.setdefault(key, row)
    return list(rows.values())


def fold_signs(rows, config, reference, metric="UA"):
    """Folds where ``config`` is above, equal to and below ``reference`` (paired by fold name).

    Example
    -------
    >>> rows = [{"config": c, "fold": f, "UA": u} for c, f, u in
    ...         (("a", "1", 50), ("a", "2", 40), ("b", "1", 45), ("b", "2", 40))]
    >>> fold_signs(rows, "a", "b")
    (1, 1, 0)
    """
    differences = [a - b for a, b in _paired_values(_rows_by_config(rows), config, reference, metric)]
    return (sum(d > 0 for d in differences), sum(d == 0 for d in differences), sum(d < 0 for d in differences))


def grid_matrix(summaries, alphas, betas, metric):
    """``metric`` means as an alphas x betas matrix (None where a cell is missing)."""
    return [
        [summaries.get(config_name(a, b), {}).get("mean", {}).get(metric) for b in betas]
        for a in alphas
    ]


# ------------------------------------------------------------------ outputs

CSV_HEADER = ["kind", "config", "baseline", "alpha", "beta", "overrides", "fold", "protocol",
              "test_session", "seed", "n_folds"]


def write_results_csv(path, rows, summaries, emotion_classes):
    """One row per (configuration, fold), then a ``mean`` and a ``std`` row per configuration."""
    metrics = list(METRICS) + [f"recall_{name}" for name in emotion_classes]
    header = CSV_HEADER + metrics + ["n_utterances", "epoch"]
    lines = []
    for row in rows:
        lines.append({**{k: row.get(k) for k in header}, "n_folds": 1})
    for config, summary in summaries.items():
        for kind in ("mean", "std"):
            line = {"kind": kind, "config": config, "alpha": summary["alpha"],
                    "beta": summary["beta"], "baseline": summary["baseline"],
                    "overrides": summary["overrides"], "fold": "+".join(summary["folds"]),
                    "n_folds": summary["n_folds"]}
            line.update({m: summary[kind].get(m) for m in metrics})
            lines.append(line)
    write_text_atomically(path, _csv_text(header, lines))


def _csv_text(header, lines):
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for line in lines:
        writer.writerow({k: _format_number(v) for k, v in line.items()})
    return buffer.getvalue()


def _format_number(value):
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else value


def _mean_std(summary, metric):
    mean = summary["mean"].get(metric)
    if mean is None:
        return "n/a"
    std = summary["std"].get(metric)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _p(value):
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(summaries, tests, emotion_classes, reference):
    """The results as a Markdown table (mean ± std over folds) and the paired tests.

    Floor rows (``baseline``) are marked as such; ``tests`` may hold tests
    against several references (the emotion-only model and each floor), each
    reference getting its own table.
    """
    has = lambda metric: any(metric in s["mean"] for s in summaries.values())  # noqa: E731
    columns = [m for m in ("best_valid_UA",) if has(m)] + ["WA", "UA"]
    columns += [f"recall_{c}" for c in emotion_classes]
    columns += [m for m in ("CER", "WER", "speaker_acc") if has(m)]
    titles = {"WA": "WA %", "UA": "UA %", "CER": "CER %", "WER": "WER %",
              "speaker_acc": "speaker acc %", "best_valid_UA": "valid UA %"}
    titles.update({f"recall_{c}": f"recall {c} %" for c in emotion_classes})
    lines = [
        "| config | alpha | beta | folds | " + " | ".join(titles[c] for c in columns) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(columns),
    ]
    for config, summary in summaries.items():
        if summary.get("baseline"):
            cells = [f"floor: {config}", "–", "–", str(summary["n_folds"])]
        else:
            cells = [config, f"{summary['alpha']:g}", f"{summary['beta']:g}", str(summary["n_folds"])]
        cells += [_mean_std(summary, c) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    overrides = [(c, s["overrides"]) for c, s in summaries.items() if s.get("overrides")]
    if overrides:
        lines += ["", "Options of each configuration beyond alpha and beta:", ""]
        lines += [f"- `{config}`: `{options}`" for config, options in overrides]
    by_reference = {}
    for test in tests:
        by_reference.setdefault(test.get("reference", reference), []).append(test)
    for name, group in by_reference.items():
        n_pairs = max(test["n_pairs"] for test in group)
        lines += [
            "",
            f"Paired tests against {name} over the folds both finished (two-sided p-values; "
            f"with {n_pairs} folds the smallest exact Wilcoxon p is {2 / 2 ** n_pairs:.4g}):",
            "",
            "| config | metric | pairs | mean diff (points) | Wilcoxon p | paired t p |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for test in group:
            diff = "n/a" if test["mean_difference"] is None else f"{test['mean_difference']:+.2f}"
            lines.append(
                f"| {test['config']} | {test['metric']} | {test['n_pairs']} | {diff} | "
                f"{_p(test['wilcoxon_p'])} | {_p(test['paired_t_p'])} |"
            )
    return "\n".join(lines) + "\n"


def plot_confusion(path, confusion, emotion_classes, title):
    """Row-normalised confusion matrix (counts summed over folds) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(confusion, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(4.2, 3.8))
    image = axis.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(emotion_classes)):
        for j in range(len(emotion_classes)):
            axis.text(j, i, f"{int(counts[i, j])}\n{100 * rates[i, j]:.0f}%", ha="center",
                      va="center", fontsize=8, color="white" if rates[i, j] > 0.5 else "black")
    axis.set_xticks(range(len(emotion_classes)), emotion_classes)
    axis.set_yticks(range(len(emotion_classes)), emotion_classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    _save_figure(figure, path)


def plot_heatmap(path, matrix, alphas, betas, metric, title):
    """A metric over the alpha x beta grid (rows alpha, columns beta) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    figure, axis = plt.subplots(figsize=(1.1 * len(betas) + 2.2, 0.9 * len(alphas) + 1.6))
    image = axis.imshow(values, cmap="viridis", aspect="auto")
    low, high = np.nanmin(values), np.nanmax(values)
    for i in range(len(alphas)):
        for j in range(len(betas)):
            text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.1f}"
            bright = not np.isnan(values[i, j]) and values[i, j] > low + 0.6 * (high - low)
            axis.text(j, i, text, ha="center", va="center", fontsize=8,
                      color="black" if bright else "white")
    axis.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
    axis.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    axis.set_xlabel("beta (speaker loss weight)")
    axis.set_ylabel("alpha (CTC loss weight)")
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis, label=f"{metric} %")
    figure.tight_layout()
    _save_figure(figure, path)


def plot_bars(path, summaries, title):
    """WA and UA (mean, with the standard deviation over folds as error bars) per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(1.3 * len(names) + 2, 3.4))
    for offset, metric in ((-0.2, "WA"), (0.2, "UA")):
        means = [summaries[n]["mean"].get(metric, np.nan) for n in names]
        stds = [summaries[n]["std"].get(metric) or 0.0 for n in names]
        axis.bar(positions + offset, means, 0.4, yerr=stds, capsize=3, label=metric)
    labels = [("floor:\n" if summaries[n].get("baseline") else "") + n.replace("_", "\n")
              for n in names]
    axis.set_xticks(positions, labels, fontsize=7)
    axis.set_ylabel("% (mean ± std over folds)")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    _save_figure(figure, path)


def _save_figure(figure, path):
    import matplotlib.pyplot as plt

    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)


def write_json(path, data):
    """Writes ``data`` as indented JSON through a temporary file and a rename."""
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")

