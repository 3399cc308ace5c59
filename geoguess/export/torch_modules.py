"""PyTorch modules mirroring GeoCLIP, written to export cleanly to ONNX.

State-dict keys match geoclip 1.3.0 so its released weights load with strict=True.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

# Equal Earth projection constants, as in GeoCLIP (Savric et al. 2018, scaled by SF/180).
A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
SF = 66.50336


def equal_earth(latlon: torch.Tensor) -> torch.Tensor:
    # x * (pi/180) is what torch.deg2rad computes; the ONNX exporter lacks deg2rad.
    lat = latlon[:, 0] * (math.pi / 180)
    lon = latlon[:, 1] * (math.pi / 180)
    theta = torch.asin((math.sqrt(3.0) / 2) * torch.sin(lat))
    denom = 3 * (9 * A4 * theta**8 + 7 * A3 * theta**6 + 3 * A2 * theta**2 + A1)
    x = (2 * math.sqrt(3.0) * lon * torch.cos(theta)) / denom
    y = A4 * theta**9 + A3 * theta**7 + A2 * theta**3 + A1 * theta
    return torch.stack((x, y), dim=1) * SF / 180


class _Fourier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(256, 2), requires_grad=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # Same operation order as geoclip's rff (2*pi*v first): at sigma 2^8 the phase
        # reaches thousands of radians, where rounding order shows in float32.
        vp = (2 * math.pi * v) @ self.b.T
        return torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1)


class Capsule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.capsule = nn.Sequential(
            _Fourier(),
            nn.Linear(512, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(1024, 512))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.capsule(x))


class LocationEncoder(nn.Module):
    """GPS (lat, lon in degrees) -> (summed embedding, per-capsule embeddings)."""

    def __init__(self, n_capsules: int = 3) -> None:
        super().__init__()
        self.n = n_capsules
        for i in range(n_capsules):
            self.add_module(f"LocEnc{i}", Capsule())

    def forward(self, latlon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = equal_earth(latlon)
        caps = [self._modules[f"LocEnc{i}"](x) for i in range(self.n)]
        stacked = torch.stack(caps, dim=1)
        total = caps[0]
        for c in caps[1:]:
            total = total + c
        return total, stacked


class ImageEncoder(nn.Module):
    """CLIP vision tower + visual projection + GeoCLIP's MLP head (768 -> 768 -> 512)."""

    def __init__(self, vision: nn.Module) -> None:
        super().__init__()
        self.vision = vision
        self.mlp = nn.Sequential(nn.Linear(768, 768), nn.ReLU(), nn.Linear(768, 512))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.vision(pixel_values=pixel_values).image_embeds)


class _ClsOnlyLayer(nn.Module):
    """A CLIP encoder layer computed for the class token only.

    CLIP's image embedding is the class token of the last layer (pooled, then
    projected), so in that layer the attention output, residual and MLP of the other
    256 tokens are wasted work: about 3.5% of a ViT-L/14 image. Keys and values still
    come from every token, so the class token comes out the same. Only the last layer
    may be cut like this: every earlier layer's tokens feed the next one's keys.
    """

    def __init__(self, layer: nn.Module, returns_tuple: bool) -> None:
        super().__init__()
        self.layer = layer
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states: torch.Tensor, *args: object, **kwargs: object) -> object:
        attn = self.layer.self_attn
        x = self.layer.layer_norm1(hidden_states)
        n, _, d = x.shape
        heads = attn.num_heads
        size = d // heads
        q = attn.q_proj(x[:, :1]).reshape(n, -1, heads, size).transpose(1, 2)
        k = attn.k_proj(x).reshape(n, -1, heads, size).transpose(1, 2)
        v = attn.v_proj(x).reshape(n, -1, heads, size).transpose(1, 2)
        weights = torch.softmax((q @ k.transpose(-1, -2)) * attn.scale, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(n, 1, d)
        cls = hidden_states[:, :1] + attn.out_proj(out)
        cls = cls + self.layer.mlp(self.layer.layer_norm2(cls))
        # transformers 4.x layers return a tuple, 5.x a tensor; answer like the original.
        return (cls,) if self.returns_tuple else cls


@contextlib.contextmanager
def class_token_only_last_layer(vision: nn.Module) -> Iterator[None]:
    """Within the block, ``vision``'s last encoder layer computes only the class token.

    The last hidden state then has one token, which is all that CLIP's pooling reads.
    """
    layers = vision.vision_model.encoder.layers
    original = layers[-1]
    seen: list[bool] = []
    hook = original.register_forward_hook(lambda _m, _i, out: seen.append(isinstance(out, tuple)))
    try:
        size = vision.config.image_size
        with torch.no_grad():
            vision(pixel_values=torch.zeros(1, 3, size, size))
    finally:
        hook.remove()
    layers[-1] = _ClsOnlyLayer(original, returns_tuple=seen[0])
    try:
        yield
    finally:
        layers[-1] = original
