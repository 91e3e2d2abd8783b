"""Torch-free runtime: ONNX Runtime inference and exact fast retrieval scoring."""
