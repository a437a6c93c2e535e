"""The old place of :mod:`mtlser_lobes.inference.export`, for model folders exported before it moved.

Their ``hyperparams.yaml`` loads parameters with
``!name:mtlser_lobes.export.load_safetensors``; this name keeps them loading
(and passing the safe-loading check). New code imports
``mtlser_lobes.inference.export``.
"""

from mtlser_lobes.inference.export import load_safetensors

__all__ = ["load_safetensors"]
