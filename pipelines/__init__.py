"""Tandem pipelines: declarative stream processing that runs on the device and in the cloud.

The library arrives with the "On-device stream processing" work; the package exists so the
layout and its import contracts are fixed from the start.
"""
