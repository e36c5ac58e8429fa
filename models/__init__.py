"""Tandem models: numpy training and ONNX export of the edge and cloud models.

Model definitions arrive with the "Models and cloud serving" work; the package exists so the
layout and its import contracts are fixed from the start.
"""
