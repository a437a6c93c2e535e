"""Experiment identity: an output folder holds one experiment, never a mix of two.

``train.py`` records, in ``<output_folder>/experiment.json`` and before anything
else is written there, what makes the experiment what it is: the absolute data
folder and every top-level hyperparameter (after the command-line overrides)
except a recipe's explicit list of keys that may change between runs of one
experiment (number of epochs, workers, device, output paths, ...). A later run
into the same folder compares its own identity with the record:

- the same identity resumes;
- a different one stops before touching the folder, naming the keys that differ;
  asked to overwrite, the caller discards the old experiment
  (:func:`discard_experiment`) and starts a new one;
- a folder made before identities existed (``hyperparams.yaml`` but no
  ``experiment.json``) is compared through its saved ``hyperparams.yaml``: the
  data folder and the plain values (numbers, strings, lists) of the keys both
  runs have must agree; keys only one of them has are listed in a warning. The
  record is then written.

Values are compared as written in the YAML, references unresolved
(``batch_size: !ref <batch_size>`` inside the loader options), so a key that
may change (``num_workers``) does not drag the keys that refer to it along;
every key referred to is compared on its own. Nothing is instantiated: the
comparison runs before the encoder is loaded.

Example
-------
>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> hparams = os.path.join(folder, "hparams.yaml")
>>> with open(hparams, "w") as f:
...     _ = f.write("lr: 0.1\\nepochs: 2\\ndata_folder: data\\nout: !ref results/<lr>\\n")
>>> exempt = ["epochs", "out"]
>>> first = experiment_identity(hparams, "epochs: 5", exempt)
>>> sorted(first), first["lr"]
(['data_folder', 'lr'], 0.1)
>>> output = os.path.join(folder, "exp")
>>> check_output_folder(output, first)
'new'
>>> write_identity(output, first)
>>> check_output_folder(output, experiment_identity(hparams, "epochs: 9", exempt))
'resume'
>>> try:
...     check_output_folder(output, experiment_identity(hparams, "lr: 0.2", exempt))
... except ExperimentMismatch as error:
...     print(str(error).split(". ")[1])
lr: 0.1 there, 0.2 now
"""

import json
import os
import shutil

import ruamel.yaml
from hyperpyyaml import resolve_references
from speechbrain.utils.logger import get_logger

from mtlser_lobes.helpers import training_directory, write_text_atomically

logger = get_logger(__name__)

__all__ = [
    "IDENTITY_FILE",
    "ExperimentMismatch",
    "hparams_values",
    "experiment_identity",
    "identity_differences",
    "check_output_folder",
    "discard_experiment",
    "write_identity",
]

#: The record of an experiment's identity, in its output folder.
IDENTITY_FILE = "experiment.json"
#: What ``sb.create_experiment_directory`` saves: present in every folder train.py wrote.
SAVED_HPARAMS = "hyperparams.yaml"


class ExperimentMismatch(ValueError):
    """The output folder holds another experiment (the message says what differs)."""


def _plain(node):
    """A ruamel node as JSON-ready data; a tagged node becomes ``{tag: value}`` or ``"tag value"``."""
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, ruamel.yaml.comments.TaggedScalar):
        return f"{tag} {node.value}".strip()
    if isinstance(node, dict):
        value = {str(key): _plain(item) for key, item in node.items()}
    elif isinstance(node, (list, tuple)):
        value = [_plain(item) for item in node]
    elif node is None or isinstance(node, bool):
        value = node
    elif isinstance(node, int):
        value = int(node)
    elif isinstance(node, float):
        value = float(node)
    else:
        value = str(node)
    if tag and tag.startswith("!"):
        return {tag: value}
    return value


def hparams_values(hparams_file, overrides=None, resolve=True):
    """Top-level keys of a HyperPyYAML file, with overrides, as plain data; no object is built.

    Arguments
    ---------
    hparams_file : str
        The YAML file.
    overrides : str or dict, optional
        As ``load_hyperpyyaml`` takes them (``sb.parse_arguments`` gives a YAML string).
    resolve : bool
        Resolve ``!ref`` (``data_folder: !ref <x>`` -> the value of ``x``); otherwise a
        reference stays as the string ``"!ref <x>"``. Objects (``!new:``, ``!name:``,
        ``!apply:``) stay ``{tag: arguments}`` either way.

    Returns
    -------
    dict
    """
    yaml = ruamel.yaml.YAML()
    with open(hparams_file, encoding="utf-8") as stream:
        if resolve:
            tree = yaml.load(resolve_references(stream, overrides))
        else:
            tree = yaml.load(stream)
            if overrides:
                from hyperpyyaml.core import recursive_update

                recursive_update(tree, yaml.load(overrides) if isinstance(overrides, str) else overrides)
    return {str(key): _plain(value) for key, value in (tree or {}).items()}


def experiment_identity(hparams_file, overrides, exempt, path_keys=("data_folder",), extra=None):
    """The identity of the experiment a command line describes.

    Arguments
    ---------
    hparams_file : str
        The recipe's YAML.
    overrides : str or dict
        Its command-line overrides.
    exempt : collection of str
        Top-level keys that may change between runs of one experiment.
    path_keys : sequence of str
        Keys compared as absolute paths, resolved (``data_folder``).
    extra : dict, optional
        More entries (e.g. run options given outside the YAML).

    Returns
    -------
    dict
        Key -> JSON-ready value.
    """
    identity = {k: v for k, v in hparams_values(hparams_file, overrides, resolve=False).items() if k not in exempt}
    resolved = hparams_values(hparams_file, overrides, resolve=True)
    for key in path_keys:
        if key in identity and isinstance(resolved.get(key), str):
            identity[key] = os.path.abspath(resolved[key])
    identity.update(extra or {})
    return json.loads(json.dumps(identity))


def _short(value, width=70):
    """A value as a user types it on the command line (``True``, ``0.1``, a path); objects shortened."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def identity_differences(recorded, current, only_common=False):
    """``key: X there, Y now`` for every key whose value differs (or is missing on one side).

    Example
    -------
    >>> identity_differences({"a": 1, "b": 2}, {"a": 1.0, "b": 3, "c": 4})
    ['b: 2 there, 3 now', 'c: absent there, 4 now']
    """
    lines = []
    for key in sorted(set(recorded) | set(current)):
        if key not in recorded or key not in current:
            if not only_common:
                there = _short(recorded[key]) if key in recorded else "absent"
                now = _short(current[key]) if key in current else "absent"
                lines.append(f"{key}: {there} there, {now} now")
        elif recorded[key] != current[key]:
            lines.append(f"{key}: {_short(recorded[key])} there, {_short(current[key])} now")
    return lines


def _is_plain(value):
    """A value written out in the YAML: no object, no reference."""
    if isinstance(value, str):
        return not value.startswith("!")
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(not str(key).startswith("!") and _is_plain(item) for key, item in value.items())
    return True


def _identity_of_old_folder(output_folder, current, path_keys):
    """Compares a folder written before identities existed through its ``hyperparams.yaml``.

    Returns the differing keys (a list of lines) and the keys only one side has.
    """
    saved = hparams_values(os.path.join(output_folder, SAVED_HPARAMS), resolve=False)
    workdir = training_directory(output_folder, str(saved.get("output_folder", ".")))
    for key in path_keys:
        if isinstance(saved.get(key), str):
            saved[key] = os.path.normpath(os.path.join(workdir, saved[key]))
    comparable = {k: v for k, v in saved.items() if k in current and _is_plain(v) and _is_plain(current[k])}
    differences = identity_differences(comparable, {k: current[k] for k in comparable})
    one_sided = sorted((set(saved) ^ set(current)) - {"output_folder"})
    return differences, one_sided


def _refusal(output_folder, differences):
    return ExperimentMismatch(
        f"{output_folder} holds another experiment. "
        + "; ".join(differences)
        + ". Nothing was changed there. Give a fresh --output_folder to run this one, or add "
        "--overwrite to discard the old experiment and start over."
    )


def check_output_folder(output_folder, identity, overwrite=False, path_keys=("data_folder",)):
    """Decides what a run may do with its output folder; raises before changing anything.

    Arguments
    ---------
    output_folder : str
        The experiment folder.
    identity : dict
        :func:`experiment_identity` of this run.
    overwrite : bool
        The run will discard an existing experiment (:func:`discard_experiment`):
        nothing is compared.
    path_keys : sequence of str
        Keys compared as absolute paths in folders without ``experiment.json``.

    Returns
    -------
    str
        ``"new"`` (no experiment there), ``"resume"`` (the same identity),
        ``"old-folder"`` (a folder without a record whose saved hyperparameters
        agree; the caller should log a warning and write the record) or
        ``"overwrite"`` (an experiment is there and ``overwrite`` was asked: the
        caller discards it with :func:`discard_experiment`).

    Raises
    ------
    ExperimentMismatch
        When the folder holds another experiment and ``overwrite`` is false.
    """
    record = os.path.join(output_folder, IDENTITY_FILE)
    saved_hparams = os.path.join(output_folder, SAVED_HPARAMS)
    if not os.path.isfile(record) and not os.path.isfile(saved_hparams):
        return "new"
    if overwrite:
        for key in path_keys:
            path = identity.get(key)
            if isinstance(path, str) and os.path.abspath(path).startswith(os.path.abspath(output_folder) + os.sep):
                raise ExperimentMismatch(
                    f"--overwrite would delete {output_folder}, which holds the {key} {path}: "
                    "choose another --output_folder"
                )
        return "overwrite"
    if os.path.isfile(record):
        try:
            with open(record, encoding="utf-8") as fin:
                recorded = json.load(fin)["identity"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ExperimentMismatch(
                f"{record} cannot be read ({error!r}), so this run cannot tell whether {output_folder} "
                "holds the same experiment. Nothing was changed there. Give a fresh --output_folder, "
                "or add --overwrite to discard the old experiment and start over."
            ) from error
        differences = identity_differences(recorded, identity)
        if differences:
            raise _refusal(output_folder, differences)
        return "resume"
    differences, _ = _identity_of_old_folder(output_folder, identity, path_keys)
    if differences:
        raise _refusal(output_folder, differences)
    return "old-folder"


def discard_experiment(output_folder):
    """Deletes an experiment folder; refuses a folder that is not one (no record, no saved hparams)."""
    if not any(os.path.isfile(os.path.join(output_folder, name)) for name in (IDENTITY_FILE, SAVED_HPARAMS)):
        raise ExperimentMismatch(f"{output_folder} is not an experiment folder: not deleting it")
    shutil.rmtree(output_folder)
    logger.info(f"discarded the experiment in {output_folder}")


def keys_unknown_to_old_folder(output_folder, identity, ignore=(), path_keys=("data_folder",)):
    """Keys that only this run or only the old folder's ``hyperparams.yaml`` has (for the warning).

    ``ignore``: keys not to list (those left out of identities, run options given outside the YAML).
    """
    return [k for k in _identity_of_old_folder(output_folder, identity, path_keys)[1] if k not in ignore]


def write_identity(output_folder, identity):
    """Writes ``<output_folder>/experiment.json`` (creating the folder), atomically."""
    os.makedirs(output_folder, exist_ok=True)
    text = json.dumps({"identity": identity}, indent=2, ensure_ascii=False, sort_keys=True)
    write_text_atomically(os.path.join(output_folder, IDENTITY_FILE), text + "\n")
