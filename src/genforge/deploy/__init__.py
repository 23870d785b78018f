"""Deploy stage: the HTTP service (micro-batched generation, restoration), its Python client,
the gallery page, and ONNX/TorchScript export with a numpy + onnxruntime diffusion sampler."""
