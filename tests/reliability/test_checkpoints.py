"""Checkpoints: a save that dies half-way is never loaded, a damaged or tampered newest checkpoint
falls back to the previous one, and nothing in a checkpoint can run code when loaded.

The checkpointer is the recipe's (``hparams/mtl.yaml``), with real torch modules
and files on disk; the faults are a recoverable whose save fails, truncated
bytes, and a pickle that would create a file when unpickled.
"""

import logging
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch
from speechbrain.utils.checkpoints import (
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from mtlser_lobes.checkpoints import FallbackCheckpointer


@register_checkpoint_hooks
class FailingDisk:
    """A recoverable whose save fails once ``full`` is set, like a disk that filled up."""

    def __init__(self):
        self.full = False

    @mark_as_saver
    def save(self, path):
        if self.full:
            raise OSError(28, "No space left on device")
        pathlib.Path(path).write_text("ok")

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        assert pathlib.Path(path).read_text() == "ok"


def two_checkpoints(tmp_path, checkpointer_class=FallbackCheckpointer):
    model = torch.nn.Linear(3, 3)
    checkpointer = checkpointer_class(str(tmp_path / "save"), recoverables={"model": model})
    torch.nn.init.constant_(model.weight, 1.0)
    first = checkpointer.save_checkpoint(meta={"step": 1})
    torch.nn.init.constant_(model.weight, 2.0)
    second = checkpointer.save_checkpoint(meta={"step": 2})
    return model, checkpointer, first, second


def test_a_save_that_dies_half_way_is_never_a_checkpoint(tmp_path, ledger):
    for checkpointer_class in (Checkpointer, FallbackCheckpointer):
        model, disk = torch.nn.Linear(3, 3), FailingDisk()
        folder = tmp_path / checkpointer_class.__name__
        checkpointer = checkpointer_class(str(folder), recoverables={"model": model, "disk": disk})
        checkpointer.save_checkpoint(meta={"step": 1})
        disk.full = True
        with pytest.raises(OSError, match="No space left"):
            checkpointer.save_checkpoint(meta={"step": 2})
        steps = sorted(c.meta["step"] for c in checkpointer.list_checkpoints())
        if checkpointer_class is Checkpointer:
            assert steps == [1, 2]  # SpeechBrain's own: the broken save looks like a checkpoint
        else:
            assert steps == [1]
            disk.full = False
            assert checkpointer.recover_if_possible().meta["step"] == 1
    ledger("checkpoint faults", "save killed half-way (disk full)")


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, ledger):
    model, checkpointer, first, second = two_checkpoints(tmp_path)
    data = (second.path / "model.ckpt").read_bytes()
    (second.path / "model.ckpt").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        loaded = checkpointer.recover_if_possible()
    assert loaded.path == first.path
    assert torch.equal(model.weight, torch.ones(3, 3))
    assert f"checkpoint {second.path} cannot be loaded" in caplog.text
    ledger("checkpoint faults", "newest checkpoint truncated")


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, ledger):
    model, checkpointer, first, second = two_checkpoints(tmp_path)
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    torch.save({"weight": Payload()}, second.path / "model.ckpt")
    loaded = checkpointer.recover_if_possible()
    assert not marker.exists()
    assert loaded.path == first.path and torch.equal(model.weight, torch.ones(3, 3))
    ledger("checkpoint faults", "tampered checkpoint (code in a pickle)")


def test_no_loadable_checkpoint_is_a_clear_error_not_a_fresh_start(tmp_path, ledger):
    _, checkpointer, first, second = two_checkpoints(tmp_path)
    for checkpoint in (first, second):
        (checkpoint.path / "model.ckpt").write_bytes(b"\x00" * 10)
    with pytest.raises(RuntimeError, match="none of the 2 checkpoints .* can be loaded"):
        checkpointer.recover_if_possible()
    ledger("checkpoint faults", "every checkpoint damaged")


def test_the_recipe_uses_the_fallback_checkpointer(tiny_encoder, tmp_path):
    from hyperpyyaml import load_hyperpyyaml

    from conftest import RECIPE_DIR

    with open(pathlib.Path(RECIPE_DIR) / "hparams" / "mtl.yaml") as hparams_file:
        hparams = load_hyperpyyaml(
            hparams_file, {"wav2vec2_hub": tiny_encoder, "output_folder": str(tmp_path), "n_speakers": 8}
        )
    assert isinstance(hparams["checkpointer"], FallbackCheckpointer)
    assert hparams["skip_nonfinite_grads"] is True


_RANK_SCRIPT = r"""
import os, sys, time
import torch
from mtlser_lobes.checkpoints import FallbackCheckpointer

rank = int(os.environ["RANK"])
torch.distributed.init_process_group("gloo")
if rank == 0:  # the main process makes a new checkpoint visible late, as on a loaded machine
    replace = os.replace

    def late_replace(*args):
        time.sleep(1.5)
        replace(*args)

    os.replace = late_replace
checkpointer = FallbackCheckpointer(sys.argv[1], recoverables={"model": torch.nn.Linear(2, 2)})
checkpointer.save_checkpoint(meta={"UA": 50.0})
seen = len(checkpointer.list_checkpoints())
checkpointer.save_and_keep_only(meta={"UA": 60.0}, max_keys=["UA"])  # lists, then deletes on every rank
kept = [c.meta["UA"] for c in checkpointer.list_checkpoints()]
print(f"rank={rank} seen={seen} kept={kept}", flush=True)
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


def test_every_rank_sees_a_new_checkpoint_before_choosing_what_to_delete(tmp_path, ledger):
    """Two gloo processes; the main one renames late. Every rank must see the checkpoint it just
    saved, or the ranks choose different deletions and deadlock (one in a broadcast, one in a barrier).
    """
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", OMP_NUM_THREADS="1")
    ranks = [
        subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(tmp_path / "save")],
                         env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for process in ranks:
            outputs.append(process.communicate(timeout=120)[0])
    except subprocess.TimeoutExpired:
        for process in ranks:
            process.kill()
        pytest.fail("the two ranks deadlocked while saving and deleting checkpoints")
    for rank, (process, output) in enumerate(zip(ranks, outputs)):
        assert process.returncode == 0, output[-3000:]
        assert f"rank={rank} seen=1 kept=[60.0]" in output, output[-3000:]
    ledger("multi-process", "checkpoint made visible late by the main rank")
