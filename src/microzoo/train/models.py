"""The U-Net that every microzoo training task uses, in 2-D and 3-D.

This file is shipped inside each exported model package as the architecture source, so it
imports only torch (and the standard library) and keeps to Python 3.9 (bioimageio.core's
oldest): anyone can rebuild the network with ``UNet(**kwargs)`` and load the package's state dict.

The shape of the network (depth 3)::

    input ─ block ──────────────────────────────── (skip) ── block ─ 1x1 ─ output
              └ down ─ block ──────────────── (skip) ── block ─ up ┘
                         └ down ─ block ─ (skip) ─ block ─ up ┘
                                    └ down ─ bottom ─ up ┘

A block is two 3x3 convolutions, each followed by batch norm (optional) and ReLU; ``down``
halves every spatial size (max pooling, or max-blur pooling for N2V2); ``up`` doubles it. Input
sizes must be multiples of ``2 ** depth``.

``up`` is a transposed convolution (``upsampling="transposed"``, the default), which also halves
the features, or a linear interpolation (``upsampling="linear"``: bilinear in 2-D, trilinear in
3-D) without weights; then the block before it narrows the features instead (its first
convolution keeps its level's width, its second halves it), as in CAREamics' and the original
Noise2Void's U-Nets: at depth 2 and 16 base features, 82 thousand weights instead of 115, and one
N2V2 training step ~10% faster on a CPU (benchmarks/RESULTS.md, "N2V2 against CAREamics").

N2V2 (Höck et al. 2022) removes the checkerboard artefacts of Noise2Void with blur pooling
and without the top skip connection: pass ``n2v2=True``. CARE learns the residual between
noisy and clean images: pass ``residual=True`` (then ``in_channels == out_channels``).

The output is ``head * output_gain + output_offset`` (buffers, one value per output channel;
1 and 0 unless a task sets them with :meth:`UNet.set_output_statistics`): a task whose targets
have a small spread (Noise2Void on percentile-normalised images) sets them to its targets' mean
and standard deviation, so that the freshly initialised network outputs on their scale and
Adam's steps of fixed size are not spent shrinking the last layer.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BlurPool", "UNet"]


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def _block(
    spatial_dims: int, in_features: int, out_features: int, batch_norm: bool, middle_features: int | None = None
) -> nn.Sequential:
    """Two 3x3 convolutions (``in -> middle -> out``; ``middle`` defaults to ``out``), each with
    optional batch norm and ReLU."""
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    middle = out_features if middle_features is None else middle_features
    layers: list[nn.Module] = []
    for features_in, features_out in ((in_features, middle), (middle, out_features)):
        layers.append(_conv(spatial_dims)(features_in, features_out, kernel_size=3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(norm(features_out))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _neighbour_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``max(x[i], x[i + 1])`` along ``dim``, the last element kept (a 2-wide max at stride 1 over a
    replicate-padded edge)."""
    n = x.shape[dim]
    return torch.cat([torch.maximum(x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1)), x.narrow(dim, n - 1, 1)], dim)


class _NeighbourMax(torch.autograd.Function):
    """:func:`_neighbour_max` with a backward pass that routes each gradient to the larger
    neighbour through one saved mask: 2.5 times faster to train than torch's own backward of
    ``maximum``, which handles ties by halves with several passes over the tensor, and than
    ``max_pool2d(kernel 2, stride 1)``, whose forward is slow at stride 1 (6 against 17 ms for
    forward and backward on an 8 x 16 x 64 x 64 batch, one core). Ties go to the first
    neighbour, as max pooling sends them; values are equal either way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int) -> torch.Tensor:  # noqa: ANN001
        n = x.shape[dim]
        ctx.dim = dim
        ctx.save_for_backward(x.narrow(dim, 1, n - 1) > x.narrow(dim, 0, n - 1))
        return _neighbour_max(x, dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        (to_second,) = ctx.saved_tensors
        n = grad.shape[ctx.dim]
        moved = grad.narrow(ctx.dim, 0, n - 1) * to_second
        grad_x = grad.clone()
        grad_x.narrow(ctx.dim, 0, n - 1).sub_(moved)
        grad_x.narrow(ctx.dim, 1, n - 1).add_(moved)
        return grad_x, None


class BlurPool(nn.Module):
    """Max-blur pooling (Zhang 2019): max over 2x2 at stride 1, then a [1, 2, 1] blur at stride 2.

    The max is taken one axis at a time (separable; the same values as ``max_pool2d`` with kernel 2
    and stride 1 on a replicate-padded edge); in training, through :class:`_NeighbourMax`, which
    makes a depth-2 N2V2 U-Net's training step ~15% faster on a CPU. TorchScript, tracing and ONNX
    export see only standard operations.
    """

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.channels = channels
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        if spatial_dims == 3:
            kernel = kernel[:, :, None] * taps
        kernel = kernel / kernel.sum()
        self.kernel: torch.Tensor  # a buffer (follows the module's device and state dict), declared for type checkers
        self.register_buffer("kernel", kernel.expand(channels, 1, *kernel.shape).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dim in range(2, 2 + self.spatial_dims):
            if torch.jit.is_scripting():
                x = _neighbour_max(x, dim)
            else:
                x = self._train_max(x, dim)
        if self.spatial_dims == 2:
            x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
            return nn.functional.conv2d(x, self.kernel, stride=2, groups=self.channels)
        x = nn.functional.pad(x, (1, 1, 1, 1, 1, 1), mode="reflect")
        return nn.functional.conv3d(x, self.kernel, stride=2, groups=self.channels)

    @torch.jit.unused
    def _train_max(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and not torch.jit.is_tracing():
            return _NeighbourMax.apply(x, dim)
        return _neighbour_max(x, dim)


class UNet(nn.Module):
    """A U-Net for 2-D (``spatial_dims=2``, input ``(b, c, y, x)``) or 3-D (``(b, c, z, y, x)``) images.

    Parameters
    ----------
    in_channels, out_channels
        Channels of the input image and of the output.
    spatial_dims
        2 or 3.
    depth
        Number of halvings; input sizes must be multiples of ``2 ** depth``.
    base_features
        Features of the first level; each level down doubles them.
    batch_norm
        Batch normalisation after every convolution.
    residual
        Add the input to the output (CARE restoration).
    n2v2
        Blur pooling and no skip connection at full resolution (N2V2).
    upsampling
        ``"transposed"`` (transposed convolutions) or ``"linear"`` (bilinear or trilinear
        interpolation, blocks that narrow their features; see the module).
    """

    def __init__(
        self, in_channels: int = 1, out_channels: int = 1, *, spatial_dims: int = 2, depth: int = 3,
        base_features: int = 32, batch_norm: bool = True, residual: bool = False, n2v2: bool = False,
        upsampling: str = "transposed",
    ) -> None:  # fmt: skip
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if upsampling not in ("transposed", "linear"):
            raise ValueError(f"upsampling must be 'transposed' or 'linear', got {upsampling!r}")
        if residual and in_channels != out_channels:
            raise ValueError("a residual U-Net needs as many output channels as input channels")
        self.depth, self.residual, self.n2v2 = depth, residual, n2v2
        features = [base_features * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        previous = in_channels
        for level in range(depth):
            self.encoders.append(_block(spatial_dims, previous, features[level], batch_norm))
            if n2v2:
                self.downs.append(BlurPool(features[level], spatial_dims))
            else:
                self.downs.append(nn.MaxPool2d(2) if spatial_dims == 2 else nn.MaxPool3d(2))
            previous = features[level]
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        if upsampling == "transposed":
            self.bottom = _block(spatial_dims, features[depth - 1], features[depth], batch_norm)
        else:  # the bottom and every decoder but the top one end at the width of the level above
            self.bottom = _block(spatial_dims, features[depth - 1], features[depth - 1], batch_norm, features[depth])
        transpose = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        for level in reversed(range(depth)):
            skip = 0 if (n2v2 and level == 0) else features[level]
            if upsampling == "transposed":
                self.ups.append(transpose(features[level + 1], features[level], kernel_size=2, stride=2))
                self.decoders.append(_block(spatial_dims, features[level] + skip, features[level], batch_norm))
            else:
                mode = "bilinear" if spatial_dims == 2 else "trilinear"
                self.ups.append(nn.Upsample(scale_factor=2, mode=mode, align_corners=False))
                out = features[max(level - 1, 0)]
                self.decoders.append(_block(spatial_dims, features[level] + skip, out, batch_norm, features[level]))
        self.head = _conv(spatial_dims)(features[0], out_channels, kernel_size=1)
        self.output_gain: torch.Tensor  # buffers (device and state dict follow the module), declared for type checkers
        self.output_offset: torch.Tensor
        self.register_buffer("output_gain", torch.ones(out_channels))
        self.register_buffer("output_offset", torch.zeros(out_channels))

    def set_output_statistics(self, mean: list[float], std: list[float]) -> None:
        """Scale the output to targets of this mean and standard deviation per channel (see the module)."""
        with torch.no_grad():
            self.output_offset.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.output_gain.copy_(torch.as_tensor(std, dtype=torch.float32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # state dicts saved before the output buffers existed: gain 1, offset 0 (as BatchNorm
        # fills in its num_batches_tracked)
        for name, value in (("output_gain", self.output_gain), ("output_offset", self.output_offset)):
            state_dict.setdefault(
                prefix + name, torch.ones_like(value) if name == "output_gain" else torch.zeros_like(value)
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        # zip without strict (equal lengths by construction): this file runs wherever the package does,
        # and bioimageio.core runs on Python 3.9, where zip takes no strict
        for encoder, down in zip(self.encoders, self.downs):  # noqa: B905
            h = encoder(h)
            skips.append(h)
            h = down(h)
        h = self.bottom(h)
        for level, (up, decoder) in enumerate(zip(self.ups, self.decoders)):  # noqa: B905
            h = up(h)
            skip = skips[self.depth - 1 - level]
            if not (self.n2v2 and level == self.depth - 1):
                h = torch.cat([h, skip], dim=1)
            h = decoder(h)
        shape = (1, -1) + (1,) * (h.dim() - 2)
        out = self.head(h) * self.output_gain.view(shape) + self.output_offset.view(shape)
        return out + x if self.residual else out
