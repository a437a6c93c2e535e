"""The logs of a training run: ``train_log.txt`` kept in step with the checkpoints, and
TensorBoard, one step per epoch (SpeechBrain's ``TensorboardLogger``)."""

import os
import re

from speechbrain.utils.logger import get_logger

__all__ = ["EpochTensorboardLogger", "keep_completed_epochs"]

logger = get_logger(__name__)


class EpochTensorboardLogger:
    """Writes what ``train_log.txt`` gets to TensorBoard event files in ``folder``, step = epoch.

    TensorBoard gets the numbers (every loss term, WA/UA, CER/WER, the learning
    rates, the learned task weights); strings, such as the per-layer weights the
    text log writes as one, are left out. SpeechBrain's TensorboardLogger counts
    its own steps from 1 in each process, so they are set from the epoch first,
    and a resumed run continues its curves. Needs the ``tensorboard`` extra.

    Arguments
    ---------
    folder : str
        Where the event files go (written on the main process only).
    """

    def __init__(self, folder):
        from speechbrain.utils.train_logger import TensorboardLogger

        logger.info(f"TensorBoard logs in {folder} (tensorboard --logdir {folder})")
        self.tensorboard = TensorboardLogger(folder)

    def log_stats(self, epoch, **stats):
        """Logs ``stats`` (``stats_meta``, ``train_stats``, ``valid_stats``, ``test_stats``) at ``epoch``."""
        numbers = {
            key: {name: value for name, value in values.items()
                  if isinstance(value, (int, float)) and not isinstance(value, bool)}
            for key, values in stats.items() if values is not None
        }
        tensorboard = self.tensorboard
        tensorboard.global_step["meta"] = epoch - 1
        for stage in ("train", "valid", "test"):
            tensorboard.global_step[stage] = {name: epoch - 1 for name in numbers.get(f"{stage}_stats", {})}
        tensorboard.log_stats(**numbers)
        if tensorboard.writer is not None:  # main process only
            tensorboard.writer.flush()


def keep_completed_epochs(train_log, completed_epochs):
    """Cuts ``train_log`` (SpeechBrain's ``FileTrainLogger`` file) back to what the recovered
    checkpoint has seen: its ``epoch: N`` lines with ``N <= completed_epochs``.

    An epoch is logged just before its checkpoint is saved, so a run killed between the
    two, or during testing, would log that epoch (or the test) twice once resumed. The file
    is rewritten atomically; nothing happens when it does not exist or is already in step.

    Arguments
    ---------
    train_log : str
        Path of ``train_log.txt``.
    completed_epochs : int
        Epochs the recovered checkpoint finished (``epoch_counter.current`` after recovery).

    Returns
    -------
    int
        How many lines were removed.

    Example
    -------
    >>> import tempfile
    >>> log = os.path.join(tempfile.mkdtemp(), "train_log.txt")
    >>> _ = open(log, "w").write("epoch: 1 - train loss: 2.0\\nepoch: 2 - train loss: 1.5\\n")
    >>> keep_completed_epochs(log, 1)
    1
    >>> open(log).read()
    'epoch: 1 - train loss: 2.0\\n'
    """
    if not os.path.isfile(train_log):
        return 0
    with open(train_log, encoding="utf-8") as log_file:
        lines = log_file.readlines()
    kept = [line for line in lines
            if (match := re.match(r"epoch: (\d+)\b", line)) and int(match.group(1)) <= completed_epochs]
    if len(kept) == len(lines):
        return 0
    partial = f"{train_log}.partial"
    with open(partial, "w", encoding="utf-8") as log_file:
        log_file.writelines(kept)
    os.replace(partial, train_log)
    logger.info(f"{train_log}: {len(lines) - len(kept)} line(s) logged after the recovered "
                f"checkpoint (epoch {completed_epochs}) removed; they are logged again")
    return len(lines) - len(kept)
