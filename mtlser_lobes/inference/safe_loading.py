"""Safe loading of shared model folders: refuse a ``hyperparams.yaml`` that would run foreign code.

A model folder's ``hyperparams.yaml`` is HyperPyYAML: its ``!new:``, ``!name:``,
``!apply:`` and ``!module:`` tags import and call any Python object they name,
and PyYAML's own ``!!python/...`` tags do the same, all while the file is being
loaded. A folder received from someone else could therefore run
``!apply:os.system`` on the machine that loads it. :func:`check_hyperparams`
reads the file as plain YAML (no object is built, nothing is imported) and
refuses it unless every tag is plain data, a HyperPyYAML reference, or points
at one of the classes and functions that :mod:`mtlser_lobes.inference.export` writes
(:data:`SAFE_TARGETS`). ``MTLSER.from_hparams(..., trust="safe")``, the
default, and ``mtlser-infer`` run it before loading anything.

Example
-------
>>> check_hyperparams(text="sample_rate: 16000\\nlabel_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder\\n")
>>> check_hyperparams(text="sample_rate: 16000\\nx: !apply:os.system [echo hi]\\n")
Traceback (most recent call last):
    ...
mtlser_lobes.inference.safe_loading.UnsafeModelError: hyperparams.yaml line 2: !apply:os.system is not a class or function an exported MTLSER model uses; load the folder with trust="all" (mtlser-infer --trust all) only if you trust whoever made it
"""

import yaml

__all__ = ["SAFE_TARGETS", "TRUST_LEVELS", "UnsafeModelError", "check_hyperparams"]

#: ``trust`` values of ``MTLSER.from_hparams`` and ``mtlser-infer --trust``.
TRUST_LEVELS = ("safe", "all")

#: The Python objects an exported model's ``hyperparams.yaml`` may name.
SAFE_TARGETS = frozenset({
    "mtlser_lobes.encoder.Wav2Vec2FromConfig",
    "mtlser_lobes.encoder.EncoderFromConfig",
    "mtlser_lobes.heads.EmotionHead",
    "mtlser_lobes.heads.CTCHead",
    "mtlser_lobes.heads.SpeakerHead",
    "mtlser_lobes.speakers.SpeakerGallery",
    "mtlser_lobes.inference.export.load_safetensors",
    "mtlser_lobes.export.load_safetensors",  # folders exported before the move to inference/
    "speechbrain.dataio.encoder.CategoricalEncoder",
    "speechbrain.dataio.encoder.CTCTextEncoder",
    "speechbrain.utils.parameter_transfer.Pretrainer",
})

# HyperPyYAML tags that build nothing from a name (references, copies, tuples, placeholders).
_DATA_TAGS = {"!ref", "!copy", "!tuple", "!PLACEHOLDER"}
# Tags of plain YAML data.
_CORE_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge")}
_CALL_TAGS = ("!new:", "!name:", "!apply:")


class UnsafeModelError(ValueError):
    """A model folder's ``hyperparams.yaml`` names code outside :data:`SAFE_TARGETS`."""


def _problem(tag, allowed):
    """Why a tag is refused, or None when it is safe."""
    if tag in _CORE_TAGS or tag in _DATA_TAGS:
        return None
    for prefix in _CALL_TAGS:
        if tag.startswith(prefix):
            if tag[len(prefix):] in allowed:
                return None
            return f"{tag} is not a class or function an exported MTLSER model uses"
    if tag.startswith("!module:"):
        return f"{tag} imports a module, which an exported MTLSER model never does"
    if tag.startswith("!include"):
        return f"{tag} loads another file, which an exported MTLSER model never does"
    if tag.startswith("tag:yaml.org,2002:python/"):
        return f"!!{tag.split(':', 2)[2]} builds a Python object, which an exported MTLSER model never does"
    return f"unknown tag {tag}"


def _walk(node):
    """Every node of a composed YAML document, depth first."""
    stack, seen = [node], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def check_hyperparams(path=None, text=None, allowed=SAFE_TARGETS, name=None):
    """Raises :class:`UnsafeModelError` if a ``hyperparams.yaml`` would run code not in ``allowed``.

    The file is composed as plain YAML: tags are read, nothing is constructed
    or imported, so a refused file's payload never runs.

    Arguments
    ---------
    path : str, optional
        The ``hyperparams.yaml`` to check.
    text : str, optional
        Its content instead of a path.
    allowed : set of str
        Dotted names that ``!new:``, ``!name:`` and ``!apply:`` may point at.
    name : str, optional
        How to call the file in the message (default: ``path``, or
        ``hyperparams.yaml`` for ``text``).

    Raises
    ------
    UnsafeModelError
        Naming every offending line and tag.
    """
    if text is None:
        with open(path, encoding="utf-8") as fin:
            text = fin.read()
    name = name or path or "hyperparams.yaml"
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as error:
        raise UnsafeModelError(f"{name}: not valid YAML ({error})") from error
    problems = []
    for document in documents:
        for node in _walk(document):
            problem = _problem(node.tag, allowed)
            if problem is not None:
                problems.append((node.start_mark.line + 1, problem))
    if problems:
        lines = "; ".join(f"line {line}: {problem}" for line, problem in sorted(set(problems)))
        raise UnsafeModelError(
            f"{name} {lines}; load the folder with trust=\"all\" (mtlser-infer --trust all) "
            "only if you trust whoever made it"
        )
