"""SpeechBrain's Checkpointer with atomic checkpoints and a fallback when the newest cannot be loaded.

SpeechBrain writes a checkpoint's ``CKPT.yaml`` first and its parameter files
after, and a folder with a ``CKPT.yaml`` counts as a checkpoint: a job killed
in the middle of a save leaves a checkpoint that looks complete and cannot be
loaded. Here the meta file is written under another name and renamed last, so
a checkpoint becomes visible only once every file in it is written; and if
the chosen checkpoint still cannot be loaded (a disk error, a truncated or
tampered file), the previous one is tried, with a warning, and so on.

Parameter files are read by ``torch.load`` with ``weights_only=True`` (the
default of torch >= 2.6, which ``setup.py`` pins): a checkpoint that would
run code when unpickled is refused like any unreadable one.

Authors
 * MTLSER developers
"""

import os
import pathlib

import torch
from speechbrain.utils.checkpoints import (
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process, main_process_only
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

#: Suffix of a meta file whose checkpoint is still being written.
PENDING = ".pending"


class FallbackCheckpointer(Checkpointer):
    """A ``speechbrain.utils.checkpoints.Checkpointer`` whose saves are atomic and whose
    recovery falls back to older checkpoints when the chosen one cannot be loaded.

    Arguments are those of ``Checkpointer``.

    Example
    -------
    >>> import tempfile, torch
    >>> model = torch.nn.Linear(2, 2)
    >>> checkpointer = FallbackCheckpointer(tempfile.mkdtemp(), recoverables={"model": model})
    >>> first = checkpointer.save_checkpoint(meta={"step": 1})
    >>> second = checkpointer.save_checkpoint(meta={"step": 2})
    >>> _ = (second.path / "model.ckpt").write_bytes(b"truncated")
    >>> checkpointer.recover_if_possible().meta["step"]  # the newest is damaged: the one before
    1
    """

    def _save_checkpoint_metafile(self, fpath, meta_to_include=None, end_of_epoch=True):
        # Written under another name: the folder is not a checkpoint until save_checkpoint ends.
        pending = pathlib.Path(str(fpath) + PENDING)
        self._pending_meta = (pending, fpath)
        return super()._save_checkpoint_metafile(pending, meta_to_include or {}, end_of_epoch)

    def save_checkpoint(self, *args, **kwargs):
        """Saves every recoverable, then makes the checkpoint visible with one rename.

        Every process waits for the rename: otherwise another rank could list
        the checkpoints before the new one is visible, choose other ones to
        delete than the main process and leave the two deadlocked in
        ``delete_checkpoints`` (one in a broadcast, the other in a barrier).
        """
        self._pending_meta = None
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if if_main_process() and self._pending_meta is not None:
            os.replace(*self._pending_meta)
        ddp_barrier()
        return checkpoint

    def recover_if_possible(self, importance_key=None, max_key=None, min_key=None,
                            ckpt_predicate=None):
        """Loads the chosen checkpoint, or the next one in order when it cannot be loaded.

        Returns the checkpoint loaded, or None when there is none; raises
        ``RuntimeError`` when there are some and none can be loaded.
        """
        candidates = self.find_checkpoints(
            importance_key=importance_key, max_key=max_key, min_key=min_key,
            ckpt_predicate=ckpt_predicate, max_num_checkpoints=None,
        )
        for checkpoint in candidates:
            try:
                self.load_checkpoint(checkpoint)
            except Exception as error:  # unpickling damaged bytes raises about anything
                logger.warning(
                    f"checkpoint {checkpoint.path} cannot be loaded "
                    f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                    "falling back to the previous one"
                )
                continue
            return checkpoint
        if candidates:
            raise RuntimeError(
                f"none of the {len(candidates)} checkpoints in {self.checkpoints_dir} can be "
                "loaded (see the warnings above); move them away to start over"
            )
        logger.info("Would load a checkpoint here, but none found yet.")
        return None


def average_best_checkpoints(checkpointer, modules, max_key, n_checkpoints):
    """Loads into ``modules`` the average of their weights in the ``n_checkpoints`` best checkpoints.

    Trusting one epoch picked on a small validation set is noisy; averaging the
    parameters of the few best (SpeechBrain's ``average_checkpoints``, as its ASR
    recipes do) gives a steadier model. Files are read with ``weights_only=True``.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
    modules : dict
        Recoverable name -> ``torch.nn.Module`` (e.g. ``wav2vec2``, ``emotion_head``).
    max_key : str
        Meta key of the checkpoints, higher is better (``UA``).
    n_checkpoints : int
        How many of the best checkpoints to average (fewer if fewer exist).

    Returns
    -------
    list
        The averaged checkpoints, best first.
    """
    from speechbrain.utils.checkpoints import average_checkpoints

    checkpoints = checkpointer.find_checkpoints(max_key=max_key, max_num_checkpoints=n_checkpoints)
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint in {checkpointer.checkpoints_dir} to average")

    def load(path, map_location="cpu"):
        return torch.load(path, map_location=map_location, weights_only=True)

    for name, module in modules.items():
        module.load_state_dict(average_checkpoints(checkpoints, name, parameter_loader=load))
    logger.info(
        f"averaged the weights of {len(checkpoints)} checkpoint(s) of best {max_key}: "
        + ", ".join(os.path.basename(str(c.path)) for c in checkpoints)
    )
    return checkpoints


@register_checkpoint_hooks
class RandomState:
    """Torch's CPU random state (dropout, ...) as a recoverable.

    With it, a run resumed from an intra-epoch checkpoint draws the same
    random numbers as the run that saved it, so that on the CPU with fixed
    seeds an interrupted and resumed training ends exactly like an
    uninterrupted one.

    Example
    -------
    >>> import os, tempfile
    >>> state, path = RandomState(), os.path.join(tempfile.mkdtemp(), "rng.ckpt")
    >>> state.save(path)
    >>> first = torch.rand(3)
    >>> state.load(path)
    >>> torch.equal(first, torch.rand(3))
    True
    """

    @mark_as_saver
    @main_process_only
    def save(self, path):
        """Writes the main process's state (a uint8 tensor, loadable with ``weights_only=True``)."""
        torch.save({"torch_cpu": torch.get_rng_state()}, path)

    @mark_as_loader
    def load(self, path, end_of_epoch=True):
        """Restores the state."""
        torch.set_rng_state(torch.load(path, weights_only=True)["torch_cpu"])


def best_checkpoint_value(checkpointer, max_key):
    """``max_key``'s value in the checkpoint that has the highest (what selected the tested model).

    None without a checkpointer or a checkpoint.
    """
    if checkpointer is None:
        return None
    best = checkpointer.find_checkpoints(max_key=max_key, max_num_checkpoints=1)
    return float(best[0].meta[max_key]) if best else None
