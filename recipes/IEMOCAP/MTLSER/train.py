#!/usr/bin/env python3
"""Recipe for multi-task speech emotion recognition (MTLSER) on IEMOCAP.

One wav2vec 2.0 encoder feeds a 4-class emotion head (primary), a CTC character head and a speaker
head, trained with ``L = L_emotion + alpha * L_ctc + beta * L_speaker``; a zero weight switches its
head off (neither run nor optimised). Without --data_folder the synthetic demo corpus is used::

    python train.py hparams/mtl.yaml --data_folder /path/to/IEMOCAP_full_release --alpha 0.1 --beta 0.1

Re-running a command resumes it; a different run refuses the folder (``recipe_options.py``). The
checkpoint of best validation UA is tested and exported to ``<output_folder>/model``
(``docs/training.md``).

Authors
 * MTLSER developers
"""

import inspect
import logging
import os
import sys

from mtlser_lobes.quiet import silence_library_noise

silence_library_noise()

import speechbrain as sb  # noqa: E402 (after the noise filters)
import torch  # noqa: E402
from hyperpyyaml import load_hyperpyyaml  # noqa: E402
from speechbrain.utils.distributed import if_main_process, run_on_main  # noqa: E402
from speechbrain.utils.logger import get_logger  # noqa: E402

from mtlser_lobes.artifacts import results_record, write_test_results  # noqa: E402
from mtlser_lobes.checkpoints import average_best_checkpoints, best_checkpoint_value  # noqa: E402
from mtlser_lobes.data.metrics import MeanTracker, StageMetrics  # noqa: E402
from mtlser_lobes.data.text import greedy_transcripts  # noqa: E402
from mtlser_lobes.heads import layer_weight_stats  # noqa: E402
from mtlser_lobes.helpers import frame_lengths  # noqa: E402
from mtlser_lobes.inference.export import export_model  # noqa: E402
from mtlser_lobes.losses import (class_balanced_weights, combine_losses, ctc_loss, emotion_loss,  # noqa: E402
                                 warmup_weight)
from mtlser_lobes.train_logger import EpochTensorboardLogger, keep_completed_epochs  # noqa: E402
from recipe_options import choose_precision, open_experiment, read_command_line, run_command_line  # noqa: E402
from iemocap_dataio import dataio_prepare, train_loader_options  # noqa: E402 (beside this file)

logger = get_logger(__name__)

#: Modules whose weights make the model (checkpoint averaging, export).
MODEL_PARTS = ("wav2vec2", "emotion_head", "ctc_head", "speaker_head")

class MTLBrain(sb.Brain):
    """Brain of the three-head model; heads with a zero loss weight are skipped.

    ``emotion_class_weights`` (a tensor, or None) weighs the emotion loss per
    class; ``main`` sets it from train.csv when ``class_balanced_loss`` is on.
    """

    emotion_class_weights = None
    #: An EpochTensorboardLogger when ``use_tensorboard`` is on (set by ``main``).
    tensorboard_logger = None

    @property
    def use_ctc(self):
        """Whether the CTC head is trained and run."""
        return self.hparams.alpha > 0

    @property
    def use_speaker(self):
        """Whether the speaker head is trained and run."""
        return self.hparams.beta > 0

    @property
    def active_heads(self):
        """Names of the heads that run: emotion, and CTC and speaker when their weight is positive."""
        return ["emotion"] + ["ctc"] * self.use_ctc + ["speaker"] * self.use_speaker

    def compute_forward(self, batch, stage):
        """Runs the encoder once and every active head.

        Returns a dict of log-probabilities: ``emotion`` (batch, n_emotions),
        and, when their weight is positive, ``ctc`` (batch, frames, n_tokens)
        and ``speaker`` (batch, n_speakers); ``feat_lens`` are the relative
        frame lengths (batch,).
        """
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if stage == sb.Stage.TRAIN and self.hparams.augment:
            # Same batch size and labels: the augmenter neither concatenates nor replicates
            wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)
        # (batch, samples) -> (layers, batch, frames, hidden): every hidden state, each head
        # reads the last layer or its own weighted sum of all of them
        feats = self.modules.wav2vec2(wavs, wav_lens)
        # Relative lengths in frames, exact, so that padding never enters the pooling
        feat_lens = frame_lengths(self.modules.wav2vec2, wav_lens, wavs.shape[1], feats.shape[-2])
        predictions = {"feat_lens": feat_lens}
        for name in self.active_heads:
            predictions[name] = self.modules[f"{name}_head"](feats, feat_lens)
        return predictions

    def effective_alpha(self):
        """``alpha``, ramped up from 0 over the first ``alpha_warmup_epochs`` epochs (``warmup_weight``)."""
        return warmup_weight(self.hparams.alpha, self.hparams.epoch_counter.current,
                             self.hparams.alpha_warmup_epochs)

    def compute_objectives(self, predictions, batch, stage):
        """Returns ``L_emotion + alpha * L_ctc + beta * L_speaker``; feeds the metrics.

        With ``loss_weighting: uncertainty`` the three terms are weighed by learned
        uncertainties instead (alpha and beta stay prior factors, 0 still switches
        a task off).
        """
        feat_lens = predictions["feat_lens"]
        emotions = batch.emo_encoded.data.view(-1)  # (batch,)
        weight = None if self.emotion_class_weights is None else self.emotion_class_weights.to(emotions.device)
        terms = {"emotion": emotion_loss(predictions["emotion"], emotions, weight, self.hparams.label_smoothing)}
        if self.use_ctc:
            tokens, token_lens = batch.tokens
            terms["ctc"] = ctc_loss(predictions["ctc"], tokens, feat_lens, token_lens,
                                    self.hparams.blank_index, self.hparams.ctc_loss_reduction)
        speakers = batch.spk_encoded.data.view(-1)  # (batch,), -1 for unseen speakers
        if self.use_speaker and (speakers >= 0).any():
            terms["speaker"] = torch.nn.functional.nll_loss(predictions["speaker"], speakers, ignore_index=-1)
        weights = {"emotion": 1.0, "ctc": self.effective_alpha(), "speaker": self.hparams.beta}
        uncertainty = self.hparams.loss_weighting == "uncertainty"
        loss = combine_losses(terms, weights, self.modules.task_weighting if uncertainty else None)
        self.loss_terms.append(terms)

        if stage != sb.Stage.TRAIN:
            self._update_metrics(predictions, batch, speakers)
        return loss

    @torch.no_grad()
    def _update_metrics(self, predictions, batch, speakers):
        """Feeds the stage's metrics (emotion, CER/WER of the greedy CTC transcripts, speakers)."""
        hypotheses = None
        if self.use_ctc:
            hypotheses = greedy_transcripts(predictions["ctc"], predictions["feat_lens"],
                                            self.tokenizer, self.hparams.blank_index)
        self.metrics.append(
            batch.id, predictions["emotion"], batch.emo_encoded.data, batch.wrd, batch.spk_id,
            hypotheses, predictions.get("speaker"), speakers,
        )

    def on_fit_start(self):
        """Recovers the last checkpoint (SpeechBrain's) and cuts ``train_log.txt`` back to it."""
        super().on_fit_start()
        if if_main_process():
            keep_completed_epochs(self.hparams.train_log, self.hparams.epoch_counter.current)

    def on_stage_start(self, stage, epoch=None):
        """Resets the loss terms and, outside training, the metric trackers."""
        self.loss_terms = MeanTracker()
        if stage != sb.Stage.TRAIN:
            ctc = self.use_ctc  # CER and WER of the CTC transcripts
            self.metrics = StageMetrics(self.hparams.emotion_classes, self.hparams.cer_computer if ctc else None,
                                        self.hparams.wer_computer if ctc else None, self.use_speaker)

    def _stage_stats(self, stage, stage_loss):
        """Loss, each loss term and, outside training, every metric of the stage."""
        stats = {"loss": stage_loss, **{f"loss_{name}": value for name, value in self.loss_terms.summarize().items()}}
        if stage != sb.Stage.TRAIN:
            return {**stats, **self.metrics.summarize()}
        if self.nonfinite_count:
            stats["nonfinite_batches_skipped"] = self.nonfinite_count
        return {**stats, **self._learned_weights()}

    def _learned_weights(self):
        """The weights learned this epoch: task weights (uncertainty) and each head's layer weights."""
        stats = {}
        if self.use_ctc and self.hparams.alpha_warmup_epochs > 0:
            stats["alpha_effective"] = self.effective_alpha()
        if self.hparams.loss_weighting == "uncertainty":
            weighting = getattr(self.modules.task_weighting, "module", self.modules.task_weighting)  # DDP
            stats.update({f"weight_{name}": weight for name, weight in weighting.weights().items()})
        stats.update(layer_weight_stats({name: self.modules[f"{name}_head"] for name in self.active_heads}))
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs the stage, anneals and checkpoints after validation, writes test results."""
        stats = self._stage_stats(stage, stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        if self.use_speaker and "speaker_acc" not in stats:
            logger.info(f"{stage.name.lower()} speakers are all unseen in training (leave-one-session-out): "
                        "speaker accuracy is not defined for them, so none is reported")
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing(stats["loss_emotion"])
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            epoch_stats = {"epoch": epoch, "lr": old_lr}
            if self.wav2vec2_optimizer is not None:
                old_lr_enc, new_lr_enc = self.hparams.lr_annealing_wav2vec2(stats["loss_emotion"])
                sb.nnet.schedulers.update_learning_rate(self.wav2vec2_optimizer, new_lr_enc)
                epoch_stats["lr_wav2vec2"] = old_lr_enc
            self._log_stats(epoch, stats_meta=epoch_stats, train_stats=self.train_stats, valid_stats=stats)
            self.checkpointer.save_and_keep_only(meta={"UA": stats["UA"], "WA": stats["WA"]}, max_keys=["UA"],
                                                 num_to_keep=max(1, self.hparams.average_checkpoints))
        elif stage == sb.Stage.TEST:
            loaded = self.hparams.epoch_counter.current
            self._log_stats(loaded, stats_meta={"Epoch loaded": loaded}, test_stats=stats)
            if if_main_process():
                self._write_test_results(stats)

    def _log_stats(self, epoch, **stats):
        """Logs a stage to ``train_log.txt`` and, with ``use_tensorboard``, to TensorBoard."""
        self.hparams.train_logger.log_stats(**stats)
        if self.tensorboard_logger is not None:
            self.tensorboard_logger.log_stats(epoch, **stats)

    def _write_test_results(self, stats):
        """Writes the test JSON and ``predictions.csv``."""
        environment = {"torch": torch.__version__, "speechbrain": sb.__version__,
                       "device": torch.device(self.device).type}
        results = results_record(stats, self.metrics.emotion.summarize(), self.hparams,
                                 best_checkpoint_value(self.checkpointer, "UA"), environment)
        header, rows = self.metrics.prediction_table(self.speaker_encoder.ind2lab)
        write_test_results(self.hparams.test_results, self.hparams.test_predictions, results, header, rows)
        logger.info(f"test results written to {self.hparams.test_results}")

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Loads the best checkpoint, or the average of the ``average_checkpoints`` best."""
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        if self.hparams.average_checkpoints > 1 and self.checkpointer is not None and max_key:
            average_best_checkpoints(self.checkpointer, {name: self.modules[name] for name in MODEL_PARTS},
                                     max_key, self.hparams.average_checkpoints)

    def init_optimizers(self):
        """One optimizer for the encoder (unless frozen), one for the active heads."""
        heads = [self.modules[f"{name}_head"] for name in self.active_heads]
        if self.hparams.loss_weighting == "uncertainty":
            heads.append(self.modules.task_weighting)
        self.optimizer = self.hparams.opt_class([p for head in heads for p in head.parameters()])
        self.optimizers_dict = {"model_optimizer": self.optimizer}
        self.wav2vec2_optimizer = None
        if not self.hparams.freeze_wav2vec2:
            self.wav2vec2_optimizer = self.hparams.wav2vec2_opt_class(self.modules.wav2vec2.parameters())
            self.optimizers_dict["wav2vec2_optimizer"] = self.wav2vec2_optimizer
        if self.checkpointer is not None:
            for name, optimizer in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, optimizer)


def main(argv):
    """Checks the options, prepares the data, trains, and tests the checkpoint of best validation UA."""
    # Everything a user typed is checked before anything is written or loaded.
    hparams_file, run_opts, overrides, values, flags, auto_precision = read_command_line(argv)

    # The output folder holds one experiment: resume it, or refuse before touching it.
    status, report_experiment = open_experiment(hparams_file, overrides, values, run_opts, flags["--overwrite"])

    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    # Python warnings go through logging too: into log.txt, and written around the progress
    # bars by SpeechBrain's console handler instead of into their line.
    logging.captureWarnings(True)
    choose_precision(hparams, run_opts, auto_precision)
    report_experiment(logger)

    from iemocap_prepare import prepare_iemocap  # noqa: E402 (beside this file)

    # Every option of the preparation has the hparams key of its name, but save_folder
    options = {name: hparams[name] for name in inspect.signature(prepare_iemocap).parameters}
    run_on_main(prepare_iemocap, kwargs={**options, "save_folder": hparams["output_folder"]})
    datasets, encoders = dataio_prepare(hparams)

    brain = MTLBrain(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
                     checkpointer=hparams["checkpointer"])
    if hparams["use_tensorboard"]:
        brain.tensorboard_logger = EpochTensorboardLogger(hparams["tensorboard_logs_folder"])
    brain.tokenizer = encoders["tokenizer"]
    brain.speaker_encoder = encoders["speaker"]
    if hparams["class_balanced_loss"]:
        labels = [row["emo"] for row in datasets["train"].data.values()]
        brain.emotion_class_weights = class_balanced_weights(labels, encoders["emotion"])

    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=train_loader_options(hparams, datasets["train"]),
        valid_loader_kwargs=hparams["valid_dataloader_options"],
    )
    brain.evaluate(datasets["test"], max_key="UA", test_loader_kwargs=hparams["test_dataloader_options"])
    if hparams["export_inference_model"]:
        # --debug keeps its checkpoints in a temporary folder (SpeechBrain's): export from there,
        # calibrating the speakers on a few utterances each
        debug = brain.debug and not brain.debug_persistently
        run_on_main(export_model, args=[hparams["output_folder"], hparams["model_folder"]], kwargs={
            "hparams": hparams, "per_speaker": 2 if debug else 30,
            "checkpoints_dir": str(brain.checkpointer.checkpoints_dir) if debug else None,
        })
    # Every rank leaves together and the process group is closed before the interpreter exits:
    # left to interpreter shutdown, gloo on the CPU sometimes aborts a rank during teardown.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def run(argv):
    """``main`` for the command line (``recipe_options.run_command_line``): returns the exit status."""
    return run_command_line(main, argv)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(run(sys.argv[1:]))
