"""Using a trained model: the ``MTLSER`` interface, export (folder, ONNX), ONNX Runtime, safe loading, ``mtlser-infer`` / ``mtlser-export`` and the browser demo."""
