"""Which precision to run in, chosen from the hardware, and what the CPU can do.

bf16 halves wav2vec 2.0's time on CPUs that compute it natively (AVX-512 BF16
or AMX) and on CUDA GPUs with bf16 support; elsewhere torch emulates it, and on
an AVX2-only CPU it is many times slower than fp32 (``benchmarks/README.md``
gives both machines' figures). ``precision="auto"`` (the default of the
inference interface, ``mtlser-infer`` and ``mtlser-demo``; available to
training) picks bf16 only where it is native, otherwise fp32, and logs which
and why. An explicit ``bf16`` where it is emulated still runs, with a warning.

int8 (the ONNX ``onnx-int8`` backend) is faster than fp32 on any x86 CPU, by
more where the CPU has VNNI instructions (AVX512-VNNI, AVX-VNNI or AMX), so
there the choice stays the user's and :func:`int8_note` only says how it runs.

Nothing here imports torch unless asked about torch's view of the CPU or a
CUDA device, so the torch-free ONNX path can use it.

Example
-------
>>> resolve_precision("fp32", "cpu")
'fp32'
>>> sorted(cpu_features(use_torch=False))
['amx', 'avx512_bf16', 'cpu_capability', 'cpu_model', 'vnni']

Authors
 * MTLSER developers
"""

import logging
import platform

logger = logging.getLogger(__name__)

#: Run options of the fp32 CPU reference: what the export, the speaker calibration and every
#: comparison against PyTorch load a model with, whatever ``auto`` would pick on the machine.
#: (The interface copies run options, so sharing this dict is safe.)
REFERENCE_RUN_OPTS = {"device": "cpu", "precision": "fp32"}

#: What ``precision`` accepts (SpeechBrain's three, and ``auto``).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Where the slowdown of emulated bf16 is measured (said in the warning).
BF16_EMULATION_NOTE = (
    "torch emulates it, which benchmarks/README.md measured at 27x the time of fp32 for "
    "wav2vec2-base on an AVX2 CPU"
)


def _cpuinfo():
    """Model name and flags from ``/proc/cpuinfo`` (Linux); empty elsewhere."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def cpu_features(use_torch=True):
    """The CPU's model, its vector capability and the instructions that decide precision.

    Arguments
    ---------
    use_torch : bool
        Ask torch (``torch.backends.cpu.get_cpu_capability()`` and
        ``torch.cpu._is_*_supported()``, what its kernels dispatch on); without
        it, or where torch lacks a helper, the flags of ``/proc/cpuinfo``.

    Returns
    -------
    dict
        ``cpu_model``, ``cpu_capability`` (e.g. "AVX2", "AVX512"),
        ``avx512_bf16``, ``amx`` and ``vnni`` (booleans).
    """
    model, flags = _cpuinfo()
    features = {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_capability": "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "DEFAULT",
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags),
    }
    if use_torch:
        import torch

        features["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        helpers = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported",
                   "vnni": "_is_vnni_supported"}
        for key, helper in helpers.items():
            if hasattr(torch.cpu, helper):
                supported = bool(getattr(torch.cpu, helper)())
                # torch's VNNI helper knows AVX512-VNNI only; /proc/cpuinfo adds AVX-VNNI and AMX-INT8
                features[key] = supported or features[key] if key == "vnni" else supported
    return features


def native_bf16(device="cpu"):
    """Whether ``device`` computes bf16 natively; with the reason, for the log.

    Returns
    -------
    (bool, str)
    """
    if str(device).startswith("cuda"):
        import torch

        supported = torch.cuda.is_bf16_supported()
        return supported, f"{torch.cuda.get_device_name(device)}: bf16 {'supported' if supported else 'not supported'}"
    features = cpu_features()
    native = [name for name, key in (("AVX-512 BF16", "avx512_bf16"), ("AMX", "amx")) if features[key]]
    where = f"CPU {features['cpu_model']}, {features['cpu_capability']}"
    if native:
        return True, f"{where}, with {' and '.join(native)}"
    return False, f"{where}, without AVX-512 BF16 or AMX"


def resolve_precision(precision, device="cpu", log=True):
    """The precision to run: ``auto`` decided from the hardware, the others as given.

    ``auto``: bf16 where ``device`` runs it natively, otherwise fp32 (one log
    line says which and why). ``bf16`` on a CPU without native support runs,
    with a warning. ``fp16`` on a CPU raises (SpeechBrain refuses it too).

    Arguments
    ---------
    precision : str
        One of :data:`PRECISIONS`.
    device : str
        "cpu", "cuda", "cuda:1", ...
    log : bool
        Log the choice of ``auto`` and warn of emulated bf16.

    Returns
    -------
    str
        "fp32", "bf16" or "fp16".
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {' | '.join(PRECISIONS)}, not {precision!r}")
    on_cpu = not str(device).startswith("cuda")
    if precision == "fp16" and on_cpu:
        raise ValueError("precision fp16 needs a CUDA device; on the CPU use bf16 (or auto)")
    if precision == "auto":
        native, reason = native_bf16(device)
        chosen = "bf16" if native else "fp32"
        if log:
            logger.info(f"precision auto: {chosen} ({reason})")
        return chosen
    if precision == "bf16" and on_cpu:
        native, reason = native_bf16(device)
        if not native and log:
            logger.warning(f"precision bf16 on a CPU without native bf16 ({reason}): {BF16_EMULATION_NOTE}; "
                           "fp32 (or auto) is faster here")
    return precision


def int8_note(features=None):
    """One line on how int8 runs on this CPU (VNNI or not), for the log of an int8 model."""
    features = features or cpu_features(use_torch=False)
    if features["vnni"]:
        return f"int8 on CPU {features['cpu_model']} ({features['cpu_capability']}) with VNNI instructions"
    return (f"int8 on CPU {features['cpu_model']} ({features['cpu_capability']}) without VNNI instructions: "
            "faster than fp32, by less than on CPUs with AVX512-VNNI, AVX-VNNI or AMX (benchmarks/README.md)")
