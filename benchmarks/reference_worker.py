"""The reference for ``geoguess bench --reference``: upstream geoclip's ``GeoCLIP.predict()``.

A worker script rather than part of the package, because it needs PyTorch and geoclip
(the ``reference`` extra plus ``pip install --no-deps geoclip==1.3.0``), which geoguess
itself never imports. ``geoguess.bench`` starts it in its own process and talks to it
through :func:`geoguess.bench.serve`.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from geoguess.bench import peak_rss_mb, serve


class ReferenceVariant:
    def __init__(self, args: dict[str, Any]) -> None:
        import warnings

        warnings.simplefilter("ignore")
        import torch
        from geoclip import GeoCLIP

        torch.manual_seed(0)
        clip = args.get("clip_path")
        if clip:
            self.model = GeoCLIP(from_pretrained=True, clip_path=clip)
        else:
            # Full ViT-L/14 geometry with random weights (the real one cannot always be
            # downloaded): the same FLOPs as upstream, with GeoCLIP's released head,
            # location encoder, logit scale and gallery loaded exactly as upstream does.
            self.model = GeoCLIP(from_pretrained=False, clip_pretrained=False)
            self.model.weights_folder = os.path.join(
                os.path.dirname(sys.modules[GeoCLIP.__module__].__file__), "weights"
            )
            self.model._load_weights()
        self.model.eval()
        torch.set_grad_enabled(False)  # predict() is no_grad already; this covers set-up
        self.model.predict(args["photos"][0], top_k=5)
        self.ready = {
            "cold_s": time.time() - float(args["t0"]),
            "provider": "torch-cpu",
            "notes": {"torch_threads": torch.get_num_threads()},
        }

    def time(self, photo: str) -> float:
        start = time.perf_counter()
        self.model.predict(photo, top_k=5)
        return time.perf_counter() - start

    def finish(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"peak_rss_mb": peak_rss_mb()}


if __name__ == "__main__":
    serve(ReferenceVariant)
