"""Making model sets from released weights, with numpy, onnx and ONNX Runtime only.

Nothing here imports PyTorch: the ONNX graphs are written directly from the weights
(``safetensors`` for CLIP, GeoCLIP's ``.pth`` files read by a restricted unpickler).
"""
