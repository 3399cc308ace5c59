"""Making model sets: PyTorch to ONNX export, quantisation, gallery embedding.

Only this subpackage imports torch and transformers, and only when a build runs;
install it with ``pip install 'geoguess[export]'``.
"""
