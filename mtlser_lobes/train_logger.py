"""TensorBoard logging of a training run, one step per epoch (SpeechBrain's ``TensorboardLogger``)."""

from speechbrain.utils.logger import get_logger

__all__ = ["EpochTensorboardLogger"]

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
