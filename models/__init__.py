"""Tandem models: the edge and cloud click-through models, trained in numpy on MovieLens and
exported to ONNX.

``models.build.build_models`` (and ``tandem models build``) trains both, exports them, and
writes their model cards; see ``models/README.md``. Building needs the ``cloud`` extra
(``onnx``, ``threadpoolctl``); running the exported files needs only onnxruntime.
"""
