"""Shared fixtures: everything runs offline on files made here."""

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "PYTEST_XDIST_WORKER" in os.environ:
    # One torch thread per pytest-xdist worker (and per process it starts): workers * threads
    # over the cores would make OpenMP spin, and one step can then take minutes instead of a second.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_DIR = os.path.join(ROOT, "recipes", "IEMOCAP", "MTLSER")
RAVDESS_RELEASE = os.path.join(
    os.path.dirname(ROOT), "shared", "ravdess_iemocap_layout", "IEMOCAP_full_release"
)
sys.path.insert(0, RECIPE_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory):
    """Folder of a tiny random wav2vec2 (the offline stand-in for wav2vec2-base)."""
    from mtlser_lobes.demo.tiny_encoder import save_tiny_wav2vec2

    return save_tiny_wav2vec2(str(tmp_path_factory.mktemp("tiny_wav2vec2")))


@pytest.fixture(scope="session")
def demo_release(tmp_path_factory):
    """A small synthetic demo corpus (IEMOCAP layout), shared by the recipe tests."""
    from mtlser_lobes.demo.demo_corpus import generate_demo_corpus

    return generate_demo_corpus(
        str(tmp_path_factory.mktemp("demo")), dialogs_per_session=2, turns_per_dialog=12
    )


@pytest.fixture(scope="session")
def trained_experiment(tmp_path_factory, tiny_encoder, demo_release):
    """train.py on the demo corpus (speaker weight 1, 20 epochs): the experiment and its exported model.

    Shared by the interface and deployment tests; they must not modify it.
    """
    from recipe_helpers import TINY_ENCODER_OVERRIDES, run_train

    output = str(tmp_path_factory.mktemp("interface") / "exp")
    run_train([
        "--wav2vec2_hub", tiny_encoder, "--data_folder", demo_release, "--output_folder", output,
        "--alpha", "0.1", "--beta", "1.0", "--number_of_epochs", "20", *TINY_ENCODER_OVERRIDES,
    ])
    return {"folder": output, "model": os.path.join(output, "model"), "data": demo_release}


# Fixtures that train a model once per process: the tests that use them run in one process
_TRAINED_MODELS = {"trained_experiment", "small_experiment"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Groups the tests for ``pytest -n N --dist loadgroup`` (README): a module's tests run in one
    worker (its module fixtures are built once), and so do all the tests of the trained models."""
    for item in items:
        uses_trained_model = _TRAINED_MODELS & set(getattr(item, "fixturenames", ()))
        group = "trained_models" if uses_trained_model else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


# The reliability suite's ledger (tests/reliability): each test records the faults it injected and
# survived; the terminal summary prints the totals that docs/reliability.md quotes.
@pytest.fixture
def ledger(request):
    """``ledger(kind, name)`` records one fault survived (call it after the assertions)."""

    def record(kind, name):
        # a report property, so it reaches the summary from pytest-xdist workers too
        request.node.user_properties.append(("reliability", (kind, name)))

    return record


def pytest_terminal_summary(terminalreporter):
    """Prints, per kind of check, the faults the reliability tests injected and passed.

    The same fault can be checked in several ways (a bad file stopped under ``bad_data: stop``
    and skipped under ``skip``); the total counts each fault once.
    """
    kinds = {}
    for report in terminalreporter.stats.get("passed", []):
        for key, value in getattr(report, "user_properties", ()):
            if key == "reliability" and report.when == "call":
                kind, name = value
                kinds.setdefault(kind, set()).add(name)
    if not kinds:
        return
    terminalreporter.section("reliability")
    for kind, names in sorted(kinds.items()):
        terminalreporter.write_line(f"{kind}: {len(names)} ({', '.join(sorted(names))})")
    faults = set().union(*kinds.values())
    checks = sum(len(names) for names in kinds.values())
    terminalreporter.write_line(
        f"total: {len(faults)} distinct injected faults, {checks} checks passed in {len(kinds)} kinds of check"
    )


@pytest.fixture(scope="session")
def small_experiment(tmp_path_factory, tiny_encoder, demo_release):
    """A 2-epoch train.py run on the demo corpus with TensorBoard on, and its exported model.

    Shared by the TensorBoard, timeline-plot and browser-demo tests (about 40 s on 2 cores).
    """
    from recipe_helpers import TINY_ENCODER_OVERRIDES, run_train

    output = str(tmp_path_factory.mktemp("small_experiment") / "exp")
    run_train([
        "--wav2vec2_hub", tiny_encoder, "--data_folder", demo_release, "--output_folder", output,
        "--alpha", "0.1", "--beta", "1.0", "--number_of_epochs", "2", "--use_tensorboard", "True",
        *TINY_ENCODER_OVERRIDES,
    ])
    return {"folder": output, "model": os.path.join(output, "model"), "data": demo_release}
