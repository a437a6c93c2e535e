"""``mtlser-infer``: emotion, transcript and speaker of audio files from the shell.

::

    mtlser-infer MODEL_DIR a.wav b.flac recordings/ [--json] [--device cuda:0]
                 [--segment_s 10] [--enroll NAME=x.wav,y.wav] [--batch_size 8]
                 [--backend torch|onnx|onnx-int8] [--trust safe|all]
    mtlser-infer MODEL_DIR long.wav --plot long.png [--segment_s 5]

Folders are searched recursively for audio files. Prints a table (or one JSON
object per file with ``--json``); a file that cannot be processed gets an
error row and a line on stderr. Files longer than 60 s are answered window by
window (a timeline) even without ``--segment_s``. ``--plot OUT.png`` draws one
file's timeline (:func:`mtlser_lobes.inference.plots.plot_timeline`; windows of 10 s
unless ``--segment_s`` is given). The exit status is 0 when at
least one file was answered, 1 when none was, 2 for bad arguments (one line on
stderr, no traceback).
"""

import argparse
import json
import logging
import os
import sys

from mtlser_lobes.artifacts import HYPERPARAMS, ONNX_CONFIG, ONNX_FOLDER
from mtlser_lobes.precision import PRECISIONS

__all__ = ["main", "AUDIO_EXTENSIONS"]

#: Extensions picked up when a folder is given.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".sph", ".w64")


EXIT_CODES = """\
exit status:
  0  at least one file was answered (files that could not be are ERROR rows)
  1  no file could be answered
  2  bad arguments: not a model folder, a folder without audio, --batch_size < 1,
     --segment_s <= 0, a device that is not there, a model folder refused by --trust safe, ...
     (one line on stderr)"""


class UsageError(Exception):
    """A bad argument: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block) and exit status 2."""

    def error(self, message):
        raise UsageError(message)


def _positive(kind):
    """argparse type: a number of ``kind`` (int or float) greater than 0."""
    what = "a whole number" if kind is int else "a number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes {what} greater than 0, not {text!r}") from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {what} greater than 0, not {text}")
        return value

    return parse


def check_precision(precision, device):
    """Refuses fp16 off CUDA with a one-line :class:`UsageError` (``mtlser-infer``, ``mtlser-demo``)."""
    if precision == "fp16" and not device.startswith("cuda"):
        raise UsageError("--precision fp16 needs a CUDA device; on the CPU use bf16 (or auto)")


def check_device(device):
    """Raises :class:`UsageError` unless torch can run on ``device`` here.

    Example
    -------
    >>> check_device("cpu")
    >>> try:
    ...     check_device("gpu")
    ... except UsageError as error:
    ...     print(error)
    --device gpu is not a torch device (cpu, cuda, cuda:1, ...)
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA GPU is visible here (torch.cuda.is_available() "
                             "is False); use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    elif parsed.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: only cpu and cuda devices are supported")


def find_audio(inputs):
    """Files named on the command line, plus the audio files under named folders (sorted)."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            found = []
            for root, _, names in os.walk(item):
                found += [os.path.join(root, n) for n in names if n.lower().endswith(AUDIO_EXTENSIONS)]
            if not found:
                raise UsageError(f"{item} is a folder with no audio file in it ({', '.join(AUDIO_EXTENSIONS)})")
            files += sorted(found)
        else:
            files.append(item)  # missing or unreadable files are reported per file
    return files


def _parse_enroll(values):
    speakers = {}
    for value in values:
        name, sep, paths = value.partition("=")
        if not sep or not name or not paths:
            raise UsageError(f"--enroll takes NAME=a.wav,b.wav, not {value!r}")
        speakers[name] = paths.split(",")
        for path in speakers[name]:
            if os.path.isdir(path):
                raise UsageError(f"--enroll {name}: {path} is a folder; give audio files (a.wav,b.wav)")
    return speakers


def _table(results):
    """Fixed-width table of the results (one row per file or window)."""
    header = ["file", "start", "end", "emotion", "p", "speaker", "score", "text"]
    rows = []
    for result in results:
        items = result["segments"] if "segments" in result else [result]
        if "segments" in result:
            items = [dict(result["overall"], start_s="all", end_s="")] + items
        for item in items:
            if item.get("error"):
                rows.append([item["source"], "" if item.get("start_s") is None else str(item["start_s"]),
                             "" if item.get("end_s") is None else str(item["end_s"]),
                             "ERROR", "", "", "", item["error"]])
                continue
            rows.append([
                item["source"],
                "" if item.get("start_s") is None else str(item["start_s"]),
                "" if item.get("end_s") is None else str(item["end_s"]),
                item["emotion"],
                f"{item['probabilities'][item['emotion']]:.2f}",
                item["speaker"],
                f"{item['speaker_score']:.2f}",
                item["text"],
            ])
    if all(row[1] == "" and row[2] == "" for row in rows):
        header, rows = [h for i, h in enumerate(header) if i not in (1, 2)], [r[:1] + r[3:] for r in rows]
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows)]
    widths[-1] = 0  # the text column is not padded
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _parse_args(argv):
    parser = _Parser(
        prog="mtlser-infer",
        description="Emotion (with probabilities), transcript and speaker of audio files, "
        "from a model folder written by train.py or mtlser-export.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model_dir", help="exported model folder (holds hyperparams.yaml)")
    parser.add_argument("inputs", nargs="+", help="audio files and/or folders (searched recursively)")
    parser.add_argument("--json", action="store_true", help="one JSON object per file instead of a table")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="encoder precision. auto (default): bf16 where the device runs it natively "
                        "(CPU with AVX-512 BF16 or AMX, CUDA GPU with bf16), else fp32; bf16 about halves "
                        "CPU time there and is many times slower where it is emulated (AVX2 CPUs)")
    parser.add_argument("--segment_s", type=_positive(float), default=None,
                        help="split each file into windows of this many seconds and give a timeline "
                        "(files longer than 60 s get 10 s windows without it)")
    parser.add_argument("--batch_size", type=_positive(int), default=1,
                        help="files (or windows) encoded together (default: 1)")
    parser.add_argument("--enroll", action="append", default=[], metavar="NAME=a.wav,b.wav",
                        help="add a speaker from recordings before predicting (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    parser.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"],
                        help="torch: the PyTorch model (default); onnx / onnx-int8: MODEL_DIR/onnx written by "
                        "mtlser-export --onnx, run by ONNX Runtime without torch (int8: quantised weights)")
    parser.add_argument("--threads", type=_positive(int), default=None,
                        help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--trust", default="safe", choices=["safe", "all"],
                        help="safe: refuse a hyperparams.yaml that names code other than the classes an "
                        "exported model uses (default); all: load anything (folders you trust only)")
    parser.add_argument("--plot", metavar="OUT.png", default=None,
                        help="draw the emotion timeline of the one file given (windows of --segment_s, "
                        "default 10 s) into this image (.png, .pdf, .svg)")
    args = parser.parse_args(argv)
    args.enroll = _parse_enroll(args.enroll)
    if args.backend == "torch":
        if not os.path.isfile(os.path.join(args.model_dir, HYPERPARAMS)):
            raise UsageError(f"{args.model_dir} is not a model folder (no hyperparams.yaml); see mtlser-export")
        check_precision(args.precision, args.device)
        check_device(args.device)
    else:
        if args.device != "cpu" or args.precision not in ("auto", "fp32"):
            raise UsageError(f"--backend {args.backend} runs on the CPU in fp32 or int8: drop --device/--precision")
        onnx_dir = args.model_dir
        if not os.path.isfile(os.path.join(onnx_dir, ONNX_CONFIG)):
            onnx_dir = os.path.join(args.model_dir, ONNX_FOLDER)
        if not os.path.isfile(os.path.join(onnx_dir, ONNX_CONFIG)):
            raise UsageError(f"{args.model_dir} has no ONNX export (onnx/config.json); run mtlser-export --onnx")
        args.onnx_dir = onnx_dir
    args.files = find_audio(args.inputs)
    if args.plot and len(args.files) != 1:
        raise UsageError(f"--plot draws the timeline of one file; {len(args.files)} were given")
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        raise UsageError(f"--plot {args.plot}: no folder {os.path.dirname(os.path.abspath(args.plot))}")
    return args


def _log_to_stderr(quiet, backend="torch"):
    """Log lines on stderr, written around the progress bar (never into its line)."""
    if backend == "torch":
        from speechbrain.utils.logger import TqdmCompatibleStreamHandler

        handler = TqdmCompatibleStreamHandler(sys.stderr)
    else:  # no torch (SpeechBrain imports it) on the ONNX path
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # this tool's info lines; only warnings from the libraries
    handler.addFilter(lambda record: record.name.startswith("mtlser") or record.levelno >= logging.WARNING)
    logging.root.handlers = [handler]
    logging.root.setLevel(logging.WARNING if quiet else logging.INFO)
    logging.captureWarnings(True)  # warnings too


def main(argv=None):
    """Entry point of ``mtlser-infer``; returns the exit status."""
    from mtlser_lobes.quiet import silence_library_noise

    silence_library_noise()
    try:
        args = _parse_args(argv)
    except UsageError as error:
        print(f"mtlser-infer: error: {error} (mtlser-infer --help for the usage)", file=sys.stderr)
        return 2
    _log_to_stderr(args.quiet, args.backend)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from tqdm import tqdm

    from mtlser_lobes.data.audio import AudioError

    if args.backend == "torch":
        from mtlser_lobes.inference.interface import MTLSER
        from mtlser_lobes.inference.safe_loading import UnsafeModelError

        try:
            model = MTLSER.from_hparams(source=args.model_dir, trust=args.trust,
                                        run_opts={"device": args.device, "precision": args.precision})
        except UnsafeModelError as error:
            print(f"mtlser-infer: error: refused to load: {error}", file=sys.stderr)
            return 2
        min_duration_s = model.hparams.min_duration_s
    else:
        from mtlser_lobes.inference.onnx_runtime import OnnxMTLSER

        model = OnnxMTLSER(args.onnx_dir, quantized=args.backend == "onnx-int8", threads=args.threads)
        min_duration_s = model.config["min_duration_s"]
    if args.plot and args.segment_s is None:
        args.segment_s = model.auto_segment_s
    if args.segment_s is not None and args.segment_s < min_duration_s:
        print(f"mtlser-infer: error: --segment_s must be at least {min_duration_s} s "
              "(the model's shortest input)", file=sys.stderr)
        return 2
    for name, paths in args.enroll.items():
        try:
            model.enroll(name, paths)
        except (AudioError, ValueError) as error:
            print(f"mtlser-infer: cannot enroll {name}: {error}", file=sys.stderr)
            return 2

    files = args.files
    results = []
    progress = tqdm(total=len(files), unit="file", disable=args.quiet or len(files) < 2, file=sys.stderr)
    if args.segment_s is None:
        for start in range(0, len(files), args.batch_size):
            chunk = files[start : start + args.batch_size]
            results += [p.to_dict() for p in model.predict_files(chunk, batch_size=args.batch_size)]
            progress.update(len(chunk))
    else:
        for path in files:
            try:
                results.append(model.predict_file(path, segment_s=args.segment_s, batch_size=args.batch_size).to_dict())
            except AudioError as error:
                results.append({"source": path, "error": str(error)})
            progress.update(1)
    progress.close()

    for result in results:
        if result.get("error"):
            print(f"mtlser-infer: {result['error']}", file=sys.stderr)
    if args.json:
        for result in results:
            print(json.dumps(result, ensure_ascii=False))
    else:
        print(_table(results))
    answered = sum(1 for r in results if not r.get("error"))
    if args.plot and answered:
        from mtlser_lobes.inference.plots import plot_timeline

        plot_timeline(results[0], args.plot)
        if not args.quiet:
            print(f"timeline written to {args.plot}", file=sys.stderr)
    if not args.quiet:
        print(f"{answered} of {len(files)} file(s) answered", file=sys.stderr)
    return 0 if answered else 1


def export_main(argv=None):
    """Entry point of ``mtlser-export`` (see :func:`mtlser_lobes.inference.export.main`)."""
    from mtlser_lobes.quiet import silence_library_noise

    silence_library_noise()
    from mtlser_lobes.inference.export import main as export

    return export(argv)


if __name__ == "__main__":
    sys.exit(main())
