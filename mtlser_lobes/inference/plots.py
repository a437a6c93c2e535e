"""Pictures of the model's answers: the emotion timeline of one recording.

:func:`plot_timeline` draws what :meth:`mtlser_lobes.inference.interface.MTLSER.predict_file`
answers: time on x; per window the emotion probabilities stacked (they sum to
one), the speaker (its name and cosine score, a dashed line where it changes)
and the transcript below. ``mtlser-infer MODEL a.wav --plot a.png`` and the
browser demo (``mtlser-demo``) draw the same figure.

The figure is a :class:`matplotlib.figure.Figure` made without pyplot, so
drawing it in a server thread touches no global state.
"""

import os
import textwrap

from matplotlib.figure import Figure
from matplotlib.patches import Patch

__all__ = ["plot_timeline", "timeline_windows", "FIGURE_SIZE", "FIGURE_DPI"]

#: Size of the figure in inches, and its resolution: a PNG of 1400 x 640 pixels.
FIGURE_SIZE = (14.0, 6.4)
FIGURE_DPI = 100
#: Colours of the emotion classes, in the model's class order (matplotlib's tab10).
_CLASS_COLOURS = ["tab:gray", "tab:orange", "tab:red", "tab:blue", "tab:green", "tab:purple",
                  "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
_SPEAKER_COLOURS = ["#8dd3c7", "#fdb462", "#bebada", "#fb8072", "#80b1d3", "#b3de69", "#fccde5",
                    "#bc80bd", "#ccebc5", "#ffed6f"]
_UNKNOWN_COLOUR = "#d9d9d9"


def timeline_windows(result):
    """The windows of an answer, as dicts with ``start_s`` and ``end_s``.

    Arguments
    ---------
    result : Timeline, Prediction or dict
        What ``predict_file`` returns, or its ``to_dict()`` (one line of
        ``mtlser-infer --json``). A :class:`~mtlser_lobes.inference.interface.Prediction`
        (a file answered whole) is one window from 0 to its duration.

    Returns
    -------
    list of dict
        One per window, in time order, with the keys of ``Prediction.to_dict()``
        (``error`` set for a window that could not be answered).

    Example
    -------
    >>> answer = {"source": "a.wav", "duration_s": 2.5, "emotion": "sad",
    ...           "probabilities": {"neu": 0.2, "sad": 0.8}, "text": "hi",
    ...           "speaker": "unknown", "speaker_score": 0.1, "error": None}
    >>> [(w["start_s"], w["end_s"], w["emotion"]) for w in timeline_windows(answer)]
    [(0.0, 2.5, 'sad')]
    """
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    if "segments" in result:
        return [dict(segment) for segment in result["segments"]]
    if result.get("error"):
        raise ValueError(f"nothing to draw: {result['error']}")
    return [dict(result, start_s=0.0, end_s=float(result["duration_s"]))]


def _speaker_changes(windows):
    """Times where the speaker of an answered window differs from the previous answered one."""
    changes, previous = [], None
    for window in windows:
        if window.get("error"):
            continue
        if previous is not None and window["speaker"] != previous:
            changes.append(window["start_s"])
        previous = window["speaker"]
    return changes


def plot_timeline(result, path=None, title=None):
    """Draws emotion over time, speakers and transcripts of one recording.

    Three rows share the time axis: the emotion probabilities of each window
    stacked (the most likely class written above it; a window that could not
    be answered, e.g. silent, is hatched with the reason), the speaker of each
    window with its cosine score (dashed lines mark where it changes), and the
    transcript of each window.

    Arguments
    ---------
    result : Timeline, Prediction or dict
        What :meth:`~mtlser_lobes.inference.interface.MTLSER.predict_file` answers (with
        ``segment_s`` for a timeline), or its ``to_dict()``.
    path : str, optional
        Where to save the figure (the format follows the extension: ``.png``,
        ``.pdf``, ``.svg``, ...).
    title : str, optional
        Default: the file's name, its duration and the overall emotion.

    Returns
    -------
    matplotlib.figure.Figure
        Its axes are, in order, the probabilities, the speakers and the
        transcripts.

    Example
    -------
    >>> windows = [
    ...     {"start_s": 0.0, "end_s": 5.0, "emotion": "neu", "probabilities": {"neu": 0.7, "sad": 0.3},
    ...      "text": "hello there", "speaker": "anna", "speaker_score": 0.9, "error": None},
    ...     {"start_s": 5.0, "end_s": 8.0, "emotion": "sad", "probabilities": {"neu": 0.1, "sad": 0.9},
    ...      "text": "oh no", "speaker": "unknown", "speaker_score": 0.2, "error": None},
    ... ]
    >>> figure = plot_timeline({"overall": {"source": "talk.wav", "duration_s": 8.0, "emotion": "neu"},
    ...                         "segments": windows})
    >>> probabilities, speakers, transcripts = figure.axes
    >>> [float(x) for x in probabilities.get_xlim()], probabilities.get_ylabel()
    ([0.0, 8.0], 'probability')
    >>> [text.get_text() for text in probabilities.get_legend().get_texts()]
    ['neu', 'sad']
    """
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    windows = timeline_windows(result)
    overall = result.get("overall", result)
    answered = [w for w in windows if not w.get("error")]
    if not answered:
        raise ValueError("nothing to draw: no window of this recording was answered")
    classes = list(answered[0]["probabilities"])
    colours = {name: _CLASS_COLOURS[i % len(_CLASS_COLOURS)] for i, name in enumerate(classes)}
    speakers = list(dict.fromkeys(w["speaker"] for w in answered if w["speaker"] != "unknown"))
    speaker_colours = {name: _SPEAKER_COLOURS[i % len(_SPEAKER_COLOURS)] for i, name in enumerate(speakers)}
    speaker_colours["unknown"] = _UNKNOWN_COLOUR
    end = max(w["end_s"] for w in windows)

    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI, layout="constrained")
    grid = figure.add_gridspec(3, 1, height_ratios=[3.0, 0.55, 1.3])
    axis = figure.add_subplot(grid[0])
    speaker_axis = figure.add_subplot(grid[1], sharex=axis)
    text_axis = figure.add_subplot(grid[2], sharex=axis)

    # Row 1: the probabilities of each window, stacked. (windows,) bars per class.
    for window in windows:
        width = window["end_s"] - window["start_s"]
        if window.get("error"):
            axis.bar(window["start_s"], 1.0, width=width, align="edge", color="white", hatch="//",
                     edgecolor="0.6", linewidth=0)
            reason = window["error"].rsplit(": ", 1)[-1]
            axis.text(window["start_s"] + width / 2, 0.5, "\n".join(textwrap.wrap(reason, 14)),
                      ha="center", va="center", fontsize=8, color="0.35")
            continue
        bottom = 0.0
        for name in classes:
            p = window["probabilities"][name]
            axis.bar(window["start_s"], p, width=width, bottom=bottom, align="edge", color=colours[name],
                     edgecolor="white", linewidth=0.5)
            bottom += p
        axis.text(window["start_s"] + width / 2, 1.01, window["emotion"], ha="center", va="bottom",
                  fontsize=9, fontweight="bold", color=colours[window["emotion"]])
    handles = [Patch(color=colours[name]) for name in classes]
    axis.legend(handles, classes, loc="upper left", bbox_to_anchor=(1.005, 1.0), title="emotion",
                frameon=False)
    axis.set_xlim(0.0, end)
    axis.set_ylim(0.0, 1.0)
    axis.set_ylabel("probability")
    axis.tick_params(labelbottom=False)

    # Row 2: the speaker of each window.
    for window in answered:
        width = window["end_s"] - window["start_s"]
        speaker_axis.broken_barh([(window["start_s"], width)], (0, 1),
                                 facecolors=speaker_colours[window["speaker"]], edgecolor="white")
        speaker_axis.text(window["start_s"] + width / 2, 0.5,
                          f"{window['speaker']}\n{window['speaker_score']:.2f}",
                          ha="center", va="center", fontsize=7.5, clip_on=True)
    for change in _speaker_changes(windows):
        for row in (axis, speaker_axis):
            row.axvline(change, color="black", linestyle="--", linewidth=1.2)
    speaker_axis.set_ylim(0, 1)
    speaker_axis.set_yticks([])
    speaker_axis.set_ylabel("speaker", rotation=0, ha="right", va="center")
    speaker_axis.tick_params(labelbottom=False)

    # Row 3: the transcript of each window, wrapped to its width.
    characters_per_second = 110 / max(end, 1e-6)  # about 110 characters across the figure
    for window in answered:
        width = window["end_s"] - window["start_s"]
        wrap = max(6, int(width * characters_per_second))
        lines = textwrap.wrap(window["text"] or "-", wrap)[:5]
        text_axis.text(window["start_s"] + width / 2, 0.95, "\n".join(lines), ha="center", va="top",
                       fontsize=7.5, family="monospace", clip_on=True)
    for window in windows[1:]:
        text_axis.axvline(window["start_s"], color="0.85", linewidth=0.8)
    text_axis.set_ylim(0, 1)
    text_axis.set_yticks([])
    text_axis.set_ylabel("transcript", rotation=0, ha="right", va="center")
    text_axis.set_xlabel("time (s)")

    if title is None:
        name = os.path.basename(str(overall.get("source") or "recording"))
        title = f"{name}: {end:.1f} s"
        if overall.get("emotion"):
            title += f", overall {overall['emotion']}"
        if len(windows) > 1:
            title += f", {len(windows)} windows"
    figure.suptitle(title)
    if path is not None:
        figure.savefig(path)
    return figure
