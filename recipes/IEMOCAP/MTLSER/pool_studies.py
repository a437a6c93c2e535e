#!/usr/bin/env python3
"""Pools the folds of several studies (replicates with other seeds) into one table with paired tests.

Each replicate of a study (``run_experiments.py ... --seeds 7``) is a folder of its own; this reads
their ``results.json``, takes every (session, seed) fold of each configuration once, and prints the
mean ± s.d. over all of them, the paired tests against ``--reference`` (folds paired by session and
seed), how many folds are above, equal to and below it, and how many have a class at 0 % recall::

    python pool_studies.py study_results/ravdess_ablation_preset \\
        study_results/ravdess_ablation_fbank_30epochs_no_warmup_seed7 \\
        --configs alpha0_beta0 alpha0.1_beta0.1 mfcc_logreg
"""

import argparse
import json
import os
import sys

from mtlser_lobes.studies.experiments import aggregate, fold_signs, markdown_table, paired_tests, pool_fold_rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("studies", nargs="+", help="study folders (with results.json)")
    parser.add_argument("--configs", nargs="+", default=None, help="configurations to keep (default: all)")
    parser.add_argument("--reference", default="alpha0_beta0", help="the configuration the others are tested against")
    args = parser.parse_args(argv)
    studies = []
    for folder in args.studies:
        path = os.path.join(folder, "results.json")
        if not os.path.isfile(path):
            parser.error(f"{path} does not exist: give folders written by run_experiments.py")
        with open(path, encoding="utf-8") as fin:
            studies.append(json.load(fin))
    classes = studies[0]["emotion_classes"]
    rows = pool_fold_rows(studies, args.configs)
    summaries = aggregate(rows, classes)
    if args.reference not in summaries:
        parser.error(f"--reference {args.reference} is not among the pooled configurations {sorted(summaries)}")
    print(f"Pooled from {len(studies)} studies: " + ", ".join(os.path.basename(os.path.normpath(f)) for f in args.studies))
    print()
    print(markdown_table(summaries, paired_tests(rows, args.reference, metrics=("UA",)), classes, args.reference))
    print(f"| config | folds above / equal / below {args.reference} (UA) | folds with a class at 0 % recall |")
    print("|---|---|---:|")
    for config in summaries:
        zero = sum(any(row.get(f"recall_{c}") == 0 for c in classes) for row in rows if row["config"] == config)
        signs = "" if config == args.reference else " / ".join(map(str, fold_signs(rows, config, args.reference)))
        print(f"| {config} | {signs} | {zero} of {summaries[config]['n_folds']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
