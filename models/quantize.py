"""The int8 variant of a model: weights (the embedding table included) stored as int8 and
activations quantized on the fly, by onnxruntime's dynamic quantization."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic


def quantize_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with int8 weights; metadata is carried over for the caller to amend."""
    with tempfile.TemporaryDirectory(prefix="tandem-quantize-") as scratch:
        source = Path(scratch) / "float.onnx"
        target = Path(scratch) / "int8.onnx"
        onnx.save_model(model, source)
        # Per-tensor, signed weights: the format every CPU kernel of onnxruntime accepts.
        root = logging.getLogger()
        root.addFilter(_quiet_preprocess_advice)
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=False)
        finally:
            root.removeFilter(_quiet_preprocess_advice)
        quantized = onnx.load_model(target)
    del quantized.metadata_props[:]
    for prop in model.metadata_props:
        quantized.metadata_props.add(key=prop.key, value=prop.value)
    quantized.doc_string = model.doc_string
    onnx.checker.check_model(quantized, full_check=True)
    return quantized


def _quiet_preprocess_advice(record: logging.LogRecord) -> bool:
    """onnxruntime advises shape-inference pre-processing on every call, through the root
    logger; it helps convolutional graphs, not these, so the advice is dropped."""
    return "pre-processing before quantization" not in record.getMessage()
