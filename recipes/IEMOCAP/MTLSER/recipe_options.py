"""The command line of train.py: its own flags, the checks of the options and the data folder, ``auto`` values.

Everything here runs before anything is written or the encoder is loaded, on
the plain values of the hparams file and its overrides
(``mtlser_lobes.studies.experiment_identity.hparams_values``): a mistake is
named in one sentence, with what to pass instead.
"""

import csv
import importlib.util
import math
import os
import re
import sys

import speechbrain as sb
from speechbrain.utils.distributed import ddp_barrier, if_main_process, run_on_main
from speechbrain.utils.logger import get_logger
from speechbrain.utils.run_opts import RunOptions

from mtlser_lobes.demo.demo_corpus import generate_demo_corpus
from mtlser_lobes.heads import CTC_BLOCKS, LAYER_CHOICES, POOLINGS, STATS_NORMS
from mtlser_lobes.precision import PRECISIONS, resolve_precision
from mtlser_lobes.studies.experiment_identity import (
    ExperimentMismatch,
    check_output_folder,
    discard_experiment,
    experiment_identity,
    hparams_values,
    keys_unknown_to_old_folder,
    write_identity,
)

#: Top-level hparams keys (and SpeechBrain run options) that may change between runs of one
#: experiment: changing them resumes it. Every other key, present or future, is part of the
#: experiment's identity, and so is the data folder, as an absolute path.
RESUMABLE_KEYS = (
    # How long: a finished run given more epochs resumes from its last checkpoint.
    "number_of_epochs",
    # Where things are written; the data folder counts as its absolute path (data_folder).
    "output_folder", "save_folder", "train_log", "train_csv", "valid_csv", "test_csv",
    "test_results", "test_predictions", "model_folder", "wav2vec2_folder", "demo_data_folder",
    # What is done besides training: preparation skipped, counts warned about, export, TensorBoard.
    "skip_prep", "check_counts", "export_inference_model", "use_tensorboard", "tensorboard_logs_folder",
    # How it runs: loader processes, hardware, precision, checkpoint timing, progress display.
    "num_workers", "device", "precision", "eval_precision", "auto_mix_prec", "bfloat16_mix_prec",
    "ckpt_interval_minutes", "ckpt_interval_steps", "skip_nonfinite_grads", "nonfinite_patience",
    "find_unused_parameters", "data_parallel_backend", "data_parallel_count", "distributed_backend",
    "distributed_launch", "compile", "compile_mode", "compile_module_keys",
    "compile_using_dynamic_shape_tracing", "compile_using_fullgraph", "jit", "jit_module_keys",
    "noprogressbar", "tqdm_barcolor", "tqdm_colored_bar", "log_config", "profile_training",
    "profile_steps", "profile_warmup", "test_only", "param_file", "overridden_args",
    # How much of a debug run runs (a debug run itself, --debug, is another experiment:
    # its checkpoints are thrown away, so its results must not mix with a real run's).
    "debug_batches", "debug_epochs", "debug_persistently",
)
#: This script's own flags (not SpeechBrain's, not hparams overrides).
OWN_FLAGS = {
    "--overwrite": "discard the experiment in --output_folder (if any) and start over",
    "--verbose": "show the traceback of a user error (bad option, experiment mismatch, corpus problem)",
}


logger = get_logger(__name__)


class UsageError(ValueError):
    """An option the user gave cannot work; the message says which and what to pass."""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_options(values):
    """Problems with the options a user types, from the plain hparams (nothing built).

    Arguments
    ---------
    values : dict
        Resolved top-level hparams (``mtlser_lobes.studies.experiment_identity.hparams_values``).

    Returns
    -------
    list of str
        One sentence per problem (empty when all is well).
    """
    from iemocap_prepare import VALID_SPLITS

    problems = []
    for key in ("alpha", "beta"):
        if not _is_number(values.get(key)) or values[key] < 0:
            problems.append(f"--{key} must be a number >= 0 (0 switches its head off), not {values.get(key)!r}")
    choices = {
        "protocol": ("loso", "random"),
        "valid_split": VALID_SPLITS,
        "bad_data": ("stop", "skip"),
        "sorting": ("random", "ascending", "descending"),
        "check_counts": ("auto", True, False),
        "emotion_layers": LAYER_CHOICES,
        "ctc_layers": LAYER_CHOICES,
        "speaker_layers": LAYER_CHOICES,
        "emotion_pooling": POOLINGS,
        "precision": PRECISIONS,
        "eval_precision": PRECISIONS,
        "speaker_stats_norm": STATS_NORMS,
        "ctc_block": CTC_BLOCKS,
        "ctc_loss_reduction": ("mean", "frame", "batchmean"),
        "loss_weighting": ("fixed", "uncertainty"),
        "class_balanced_loss": (True, False),
        "augment": (True, False),
        "wav2vec2_time_masking": (True, False),
        "use_tensorboard": (True, False),
    }
    for key, allowed in choices.items():
        if key in values and values[key] not in allowed:
            names = " | ".join(str(a) for a in allowed)
            problems.append(f"--{key} must be one of {names}, not {values[key]!r}")
    if "n_speakers" in values and values["n_speakers"] != "auto" and not _is_count(values["n_speakers"], 1):
        problems.append(f"--n_speakers must be auto or a whole number >= 1, not {values.get('n_speakers')!r}")
    for key, minimum in (("test_session", 1), ("batch_size", 1), ("number_of_epochs", 1),
                         ("seed", 0), ("alpha_warmup_epochs", 0), ("average_checkpoints", 1),
                         ("ctc_block_size", 1)):
        if key in values and not _is_count(values[key], minimum):
            problems.append(f"--{key} must be a whole number >= {minimum}, not {values[key]!r}")
    if "valid_ratio" in values and not (_is_number(values["valid_ratio"]) and 0 < values["valid_ratio"] < 1):
        problems.append(f"--valid_ratio must be a number between 0 and 1, not {values['valid_ratio']!r}")
    if "label_smoothing" in values and not (_is_number(values["label_smoothing"]) and 0 <= values["label_smoothing"] < 1):
        problems.append(f"--label_smoothing must be a number >= 0 and < 1, not {values['label_smoothing']!r}")
    if values.get("valid_split") == "session" and values.get("protocol") == "random":
        problems.append("--valid_split session holds out a whole training session, which needs --protocol loso")
    ratio = values.get("split_ratio")
    if values.get("protocol") == "random" and not (
        isinstance(ratio, list) and len(ratio) == 3 and all(_is_number(r) and r > 0 for r in ratio)
    ):
        problems.append(f"--split_ratio must be three positive numbers (train, valid, test), not {ratio!r}")
    if not isinstance(values.get("data_folder"), str):
        problems.append(f"--data_folder must be a path, not {values.get('data_folder')!r}")
    if values.get("use_tensorboard") is True and importlib.util.find_spec("tensorboard") is None:
        problems.append("--use_tensorboard True needs TensorBoard: pip install mtlser[tensorboard] "
                        "(from a clone: pip install -e \".[tensorboard]\")")
    return problems


def unknown_options(hparams_file, overrides):
    """``--key value`` pairs whose key is neither in the hparams file nor a SpeechBrain run option.

    ``load_hyperpyyaml`` would stop on them too, but only after the encoder is loaded, and with a
    traceback; a typo (``--alhpa``) is named here instead.
    """
    if not overrides:
        return []
    import ruamel.yaml

    given = ruamel.yaml.YAML().load(overrides) or {}
    known = hparams_values(hparams_file, resolve=False)
    return [f"--{key} is not an option of {hparams_file} (nor a SpeechBrain run option)"
            for key in given if key not in known]


def check_data(values):
    """Problems with the data folder against the options: sessions, test session, speakers.

    Reads the label files only (``iemocap_prepare.speakers_by_session``), so it
    runs in well under a second, before the encoder is loaded.
    """
    from iemocap_prepare import PreparationError, speakers_by_session

    data_folder = values["data_folder"]
    if values.get("skip_prep"):  # prepared elsewhere: the CSVs only need their wavs under data_folder
        if not os.path.isdir(data_folder):
            return [f"data_folder {data_folder} does not exist"]
        if values["n_speakers"] == "auto" and not os.path.isfile(values["train_csv"]):
            return [f"--skip_prep True with n_speakers auto needs {values['train_csv']} to count the speakers "
                    "of; pass --n_speakers N"]
        return []
    try:
        speakers = speakers_by_session(data_folder)
    except PreparationError as error:
        return [str(error)]
    test_session = values["test_session"]
    if values["protocol"] == "loso":
        if test_session not in speakers:
            return [f"--test_session {test_session} is not among the sessions of {data_folder}: {sorted(speakers)}"]
        if len(speakers) < 2:
            return [f"leave-one-session-out needs at least two sessions; {data_folder} has {sorted(speakers)}"]
    train_sessions, train_speakers = training_speakers(speakers, values)
    if train_speakers and values["n_speakers"] != "auto" and len(train_speakers) != values["n_speakers"]:
        return [
            f"--n_speakers is {values['n_speakers']} but the training sessions {train_sessions} of "
            f"{data_folder} have {len(train_speakers)} speakers: pass --n_speakers {len(train_speakers)}"
        ]
    return []


def training_speakers(speakers, values):
    """The training sessions and speakers under the protocol, from ``speakers_by_session``'s mapping."""
    from iemocap_prepare import validation_session

    held_out = set()
    if values["protocol"] == "loso":
        held_out.add(values["test_session"])
        if values.get("valid_split") == "session":
            held_out.add(validation_session([s for s in speakers if speakers[s]], values["test_session"]))
    sessions = [s for s in speakers if s not in held_out]
    return sessions, sorted({speaker for s in sessions for speaker in speakers[s]})


def count_training_speakers(values):
    """The speakers ``train.csv`` will hold: from the label files, or a prepared ``train.csv``."""
    if values.get("skip_prep"):
        with open(values["train_csv"], newline="", encoding="utf-8") as csv_file:
            return len({row["spk_id"] for row in csv.DictReader(csv_file)})
    from iemocap_prepare import speakers_by_session

    return len(training_speakers(speakers_by_session(values["data_folder"]), values)[1])


def with_override(overrides, key, value):
    """The command line's YAML overrides with ``key: value`` set (replacing a given one)."""
    kept = [line for line in (overrides or "").splitlines() if not re.match(rf"{key}\s*:", line)]
    return "\n".join(kept + [f"{key}: {value}"]) + "\n"


def split_own_flags(argv):
    """Takes this script's flags (``--overwrite``, ``--verbose``) out of the command line.

    With ``--help``, they are listed before SpeechBrain's options (whose parser prints those).
    """
    if "-h" in argv or "--help" in argv:
        print("train.py's own flags (any other --key value overrides hparams, see below):")
        for flag, meaning in OWN_FLAGS.items():
            print(f"  {flag:<12} {meaning}")
        print("exit status: 0 done, 2 bad option or experiment mismatch, 1 corpus problem or error\n")
    flags = {flag: flag in argv for flag in OWN_FLAGS}
    return [arg for arg in argv if arg not in OWN_FLAGS], flags


def resolve_auto_precision(argv):
    """``--precision auto`` (and ``--eval_precision auto``) -> fp32 or bf16 from the hardware.

    SpeechBrain's parser knows fp32, fp16 and bf16 only, so ``auto`` is
    decided here, for the ``--device`` of the command line
    (:func:`mtlser_lobes.precision.resolve_precision`); :func:`choose_precision`
    logs the choice once the log exists.

    Returns
    -------
    list, set
        The command line with ``auto`` replaced, and the options that were ``auto``.
    """
    device = "cpu"
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            device = argv[i + 1]
        elif arg.startswith("--device="):
            device = arg.split("=", 1)[1]
    resolved, auto = list(argv), set()
    for i, arg in enumerate(argv):
        for option in ("precision", "eval_precision"):
            if arg == f"--{option}=auto":
                resolved[i] = f"--{option}={resolve_precision('auto', device, log=False)}"
                auto.add(option)
            elif arg == f"--{option}" and i + 1 < len(argv) and argv[i + 1] == "auto":
                resolved[i + 1] = resolve_precision("auto", device, log=False)
                auto.add(option)
    return resolved, auto


def choose_precision(hparams, run_opts, auto_on_command_line):
    """Resolves ``auto`` in the YAML and logs every ``auto`` choice and emulated bf16.

    A run option on the command line wins over the YAML key, as in ``sb.Brain``.
    """
    for key in ("precision", "eval_precision"):
        if key in auto_on_command_line:
            resolve_precision("auto", run_opts.device)  # the log line of the choice made before
        elif key in run_opts.overridden_args:
            resolve_precision(getattr(run_opts, key), run_opts.device)  # warns of emulated bf16
        else:
            hparams[key] = resolve_precision(hparams[key], run_opts.device)


def run_identity(values, run_opts):
    """The run options that change what is trained, with their effective values.

    A run option given on the command line wins over the hparams key of the
    same name, which wins over SpeechBrain's default (as ``sb.Brain`` decides).
    """
    defaults = RunOptions()
    effective = {}
    for name in defaults.as_dict():
        if name in RESUMABLE_KEYS:
            continue
        if name in run_opts.overridden_args:
            effective[name] = getattr(run_opts, name)
        elif name not in values:
            effective[name] = getattr(defaults, name)
    return effective


def open_experiment(hparams_file, overrides, values, run_opts, overwrite):
    """Claims ``output_folder`` for this run: one experiment per folder.

    The identity (the data folder and every option that changes what is
    trained) is compared with the folder's ``experiment.json``: the same one
    resumes, a new folder starts, ``overwrite`` discards the old experiment,
    and a different one raises ``ExperimentMismatch`` before the folder is
    touched.

    Returns
    -------
    status : str
        ``new``, ``resume``, ``overwrite`` or ``old-folder`` (a folder from
        before these records, compared through its saved ``hyperparams.yaml``).
    report : callable
        ``report(logger)`` logs the decision; call it once the experiment's log
        file exists.
    """
    output_folder = values["output_folder"]
    run_options = run_identity(values, run_opts)
    identity = experiment_identity(hparams_file, overrides, RESUMABLE_KEYS, extra=run_options)
    status = check_output_folder(output_folder, identity, overwrite=overwrite)
    ddp_barrier()  # every rank has read the folder before rank 0 changes it
    if status == "overwrite":
        run_on_main(discard_experiment, args=[output_folder])
    if status != "resume":
        run_on_main(write_identity, args=[output_folder, identity])

    def report(logger):
        if status != "old-folder":
            logger.info({"new": "new experiment", "resume": "same experiment: resuming",
                         "overwrite": "--overwrite: the old experiment was discarded"}[status])
            return
        unknown = keys_unknown_to_old_folder(output_folder, identity, ignore=RESUMABLE_KEYS + tuple(run_options))
        logger.warning(
            f"{output_folder} has no experiment.json (it predates them): its saved hyperparams.yaml "
            "agrees with this run, which resumes it"
            + (f"; keys not compared, as only one side has them: {unknown}" if unknown else "")
        )

    return status, report


def read_command_line(argv):
    """Parses and checks ``train.py``'s command line before anything is written or loaded.

    Generates the demo corpus on first use (when ``data_folder`` is the demo one) and
    turns ``n_speakers: auto`` into the count of the training speakers.

    Returns
    -------
    hparams_file, run_opts, overrides
        As ``speechbrain.parse_arguments`` returns them (``overrides`` with the resolved
        ``auto`` values).
    values : dict
        The plain values of the hparams file with the overrides.
    flags : dict
        This script's own flags (:data:`OWN_FLAGS`) -> whether given.
    auto_precision : bool
        Whether ``--precision auto`` was given.

    Raises
    ------
    UsageError
        A bad option, or a data folder that does not fit the options.
    """
    argv, flags = split_own_flags(argv)
    argv, auto_precision = resolve_auto_precision(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    if not os.path.isfile(hparams_file):
        raise UsageError(f"no hparams file {hparams_file} (run from recipes/IEMOCAP/MTLSER: hparams/mtl.yaml)")
    values = hparams_values(hparams_file, overrides)
    problems = unknown_options(hparams_file, overrides) + check_options(values)
    if problems:
        raise UsageError("\n  ".join(["bad option(s):"] + problems))
    if os.path.abspath(values["data_folder"]) == os.path.abspath(values["demo_data_folder"]):
        run_on_main(
            generate_demo_corpus,
            kwargs={"save_folder": os.path.dirname(os.path.abspath(values["data_folder"]))},
        )
    problems = check_data(values)
    if problems:
        raise UsageError("\n  ".join(["the data folder does not fit the options:"] + problems))
    if values["n_speakers"] == "auto":  # the speaker head's size, from the data (and so in the identity)
        values["n_speakers"] = count_training_speakers(values)
        overrides = with_override(overrides, "n_speakers", values["n_speakers"])
    return hparams_file, run_opts, overrides, values, flags, auto_precision


def run_command_line(main, argv, program="train.py"):
    """``main(argv)`` for the command line: a user error prints one message, exit status 2 (1 for the corpus).

    A user error is a :class:`UsageError`, an experiment mismatch or a corpus
    problem (``iemocap_prepare.PreparationError``). Real bugs keep their
    traceback (SpeechBrain logs it to ``log.txt`` too); ``--verbose`` shows it
    for user errors as well.
    """
    from iemocap_prepare import PreparationError

    try:
        main(argv)
    except (UsageError, ExperimentMismatch, PreparationError) as error:
        if "--verbose" in argv:
            raise
        print(f"{program}: error: {error}", file=sys.stderr)
        if if_main_process() and logger.hasHandlers():
            logger.debug(f"stopped: {error}")  # into log.txt once the experiment folder exists
        return 1 if isinstance(error, PreparationError) else 2
    return 0
