"""Model serving: onnxruntime sessions per model version, dynamic micro-batching, inference
over HTTP (``POST /v1/models/{name}/infer``)."""
