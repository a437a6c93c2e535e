"""The speaker part of :class:`mtlser_lobes.inference.interface.MTLSER`: identification and enrolment."""

import os

import torch
from speechbrain.utils.logger import get_logger

from mtlser_lobes.speakers import UNKNOWN_SPEAKER, centroid, identify

logger = get_logger(__name__)

__all__ = ["SpeakerEnrolment"]


class SpeakerEnrolment:
    """Names the speaker of an embedding among the training and enrolled speakers; enrols new ones.

    A mixin of ``MTLSER``: it uses the model's ``mods.speaker_gallery`` (the
    training speakers' centroids and the embedding mean), ``forward``,
    ``load_audio``, ``device``, and the attributes ``trained_speakers``,
    ``enrolled`` (name -> centroid), ``enrolled_only`` and ``speaker_threshold``
    that ``MTLSER`` sets when it loads.
    """

    @property
    def speakers(self):
        """Every speaker the model can name: the training ones (unless
        ``enrolled_only``), then the enrolled ones."""
        return ([] if self.enrolled_only else self.trained_speakers) + list(self.enrolled)

    def _gallery(self):
        centroids = self.mods.speaker_gallery.centroids  # (speakers, dim), unit length
        if self.enrolled_only:
            centroids = centroids[:0]
        if self.enrolled:
            centroids = torch.cat([centroids, torch.stack(list(self.enrolled.values())).to(centroids)])
        return centroids

    def identify(self, embeddings, threshold=None):
        """Closest known speaker of each embedding (batch, dim), or "unknown".

        Returns the labels and the cosine similarities.
        """
        threshold = self.speaker_threshold if threshold is None else threshold
        centred = self.mods.speaker_gallery.centre(embeddings.to(self.device))
        return identify(centred, self._gallery(), self.speakers, threshold)

    def embed_files(self, paths):
        """Speaker embeddings of some files, (n_files, embedding_dim); raises :class:`AudioError`."""
        embeddings = []
        for path in paths:
            wav = self.load_audio(path)
            embeddings.append(self.forward(wav[None])[0]["embedding"].cpu())
        return torch.stack(embeddings)

    def enroll(self, name, wav_paths):
        """Adds (or replaces) a speaker from a few recordings of their voice.

        Arguments
        ---------
        name : str
            The label later predictions give; must not be a training speaker
            or "unknown".
        wav_paths : list of str
            Recordings of that speaker (a few seconds each; more is better).

        Returns
        -------
        int
            Number of recordings used.
        """
        if name in self.trained_speakers or name == UNKNOWN_SPEAKER:
            raise ValueError(f"{name!r} is a training speaker or reserved: choose another name")
        wav_paths = [wav_paths] if isinstance(wav_paths, (str, os.PathLike)) else list(wav_paths)
        if not wav_paths:
            raise ValueError(f"enroll({name!r}) needs at least one recording")
        embeddings = self.embed_files(wav_paths).to(self.device)
        self.enrolled[name] = centroid(self.mods.speaker_gallery.centre(embeddings))
        logger.info(f"enrolled speaker {name!r} from {len(wav_paths)} recording(s)")
        return len(wav_paths)

    def forget(self, name):
        """Removes an enrolled speaker."""
        if name not in self.enrolled:
            raise KeyError(f"{name!r} is not enrolled (enrolled: {sorted(self.enrolled)})")
        del self.enrolled[name]

