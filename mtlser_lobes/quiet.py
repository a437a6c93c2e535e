"""The libraries' known noise, silenced; everything a user should act on still shows.

Each entry drops one message that says nothing about the user's run:

- ``torchvision is not available - cannot save figures`` (SpeechBrain's train
  logger, at import): the recipe saves no figures through it;
- ``Load called, but CategoricalEncoder is not empty`` (SpeechBrain): its
  ``load_or_create`` reloads the encoder it has just created, on every run;
- transformers' ``FutureWarning`` that ``gradient_checkpointing_disable`` is
  deprecated: SpeechBrain's wav2vec 2.0 lobe calls it when it loads the encoder.

Call :func:`silence_library_noise` before those libraries are imported (the
recipe's ``train.py`` and the command-line tools do).

Example
-------
>>> import logging
>>> silence_library_noise()
>>> record = logging.makeLogRecord({"msg": "torchvision is not available - cannot save figures"})
>>> logging.getLogger("speechbrain.utils.train_logger").filter(record)
False
"""

import logging
import re
import warnings

__all__ = ["silence_library_noise"]

#: (logger, start of the message) of the log records dropped.
DROPPED_LOG_RECORDS = (
    ("speechbrain.utils.train_logger", "torchvision is not available"),
    ("speechbrain.dataio.encoder", "Load called, but CategoricalEncoder is not empty"),
)
#: (category, start of the message) of the warnings ignored.
IGNORED_WARNINGS = (
    (FutureWarning, "`gradient_checkpointing_disable` is deprecated"),
)


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with ``start``."""

    def __init__(self, start):
        super().__init__()
        self.start = start

    def filter(self, record):
        return not record.getMessage().startswith(self.start)


def silence_library_noise():
    """Installs the filters (once; calling again changes nothing)."""
    for name, start in DROPPED_LOG_RECORDS:
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.start == start for f in target.filters):
            target.addFilter(_DropMessage(start))
    for category, start in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(start), category=category)
