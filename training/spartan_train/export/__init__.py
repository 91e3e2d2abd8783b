"""ONNX export of a SPARTAN checkpoint for the torch-free runtime (``spartan-export``)."""

from .onnx_export import EXPORTER_VERSION, ExportError, export_model, main

__all__ = ["EXPORTER_VERSION", "ExportError", "export_model", "main"]
