"""The wafer model: smp U-Net with a die-mask head, a wafer-level head and an embedding.

Why one network: the die-level masks (learnt from synthetic maps) and the
wafer-level patterns (learnt from real and synthetic maps) share the encoder,
so real maps shape the features the masks use, and serving runs one graph.

Outputs of ``forward``: ``mask_logits (N, 9, H, W)``, ``wafer_logits (N, 9)``
and ``embedding (N, D)``. With ``region_head``, ``outputs`` also returns
``region_logits (N, 7, H, W)``: one sigmoid per pattern region (training
target only, see ``ml.training.losses.region_loss``); ``forward``, which
export traces, leaves them out, so serving's graph keeps its shape.
Training asks ``outputs`` to decode only the maps with die targets, and
then the mask and region logits have a row per such map, not per input.

The wafer head is ``Dropout -> Linear`` on the embedding, so MC-dropout only
needs the embedding and the last layer: serving runs that last layer as a
separate tiny ONNX graph with explicit dropout masks (see ml/export.py),
instead of re-running the whole U-Net per sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import segmentation_models_pytorch as smp
import torch
from torch import nn

from ml.buckets import IN_CHANNELS
from ml.synth import REGION_PATTERNS
from ml.taxonomy import PATTERNS


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters, stored in checkpoints and model cards."""

    #: Shipped since v22, the default since v23. ``tu-mobilenetv3_small_100``,
    #: the default before, is cheaper per step but scored lower in the same
    #: 42 minutes (docs/model.md, "The shipped recipe in the 42-minute budget").
    encoder: str = "tu-resnet10t"
    #: Input planes the model reads: the first ``in_channels`` of ``ml.buckets.encode``.
    in_channels: int = IN_CHANNELS
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] = (64, 32, 16, 16)
    embedding_dim: int = 128
    dropout: float = 0.3
    #: Widths of the 1x1 "expand" convs feeding the wafer head, one per encoder
    #: level counted from the deepest (last entry = deepest level).
    head_channels: tuple[int, ...] = (64, 128, 256)
    #: Extra output planes, one per ``REGION_PATTERNS`` entry, trained on
    #: every on-wafer die inside or outside each pattern's region (on by
    #: default since v23; checkpoints from before the option had none).
    region_head: bool = True
    #: Give the mask head the input planes at full resolution (``DieDetail``).
    #: Off by default: a tie in a 12-epoch A/B and, with the wide decoder,
    #: in a 42-minute run (v25, docs/model.md). Checkpoints from before the
    #: option had none.
    input_skip: bool = False

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        d = asdict(self)
        d["decoder_channels"] = list(self.decoder_channels)
        d["head_channels"] = list(self.head_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ModelConfig:
        """Inverse of ``to_dict``."""
        d = dict(d)
        d.setdefault("region_head", False)  # checkpoints from before the option
        d.setdefault("input_skip", False)  # likewise
        d["decoder_channels"] = tuple(d["decoder_channels"])  # type: ignore[arg-type]
        d["head_channels"] = tuple(d["head_channels"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


def expand(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + BN + Hardswish: MobileNetV3's classifier "conv head", per level."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.Hardswish(),
    )


#: Width of ``DieDetail``'s full-resolution conv.
DIE_DETAIL_CHANNELS = 32


class DieDetail(nn.Module):
    """Decoder output + input planes at full resolution -> conv -> mask logits.

    Why: smp's U-Net drops the encoder's full-resolution feature (the input
    itself), so its last decoder stage only upsamples 1/2-resolution
    features. One die is one pixel in most buckets: which failing die lies on
    a one-die scratch and which is a background fail beside it is decided
    from blurred features. Concatenating the input planes (fail, line
    evidence) back in lets the head label dies from die-exact evidence, for
    one 3x3 conv at full resolution.
    """

    def __init__(self, decoder_channels: int, in_channels: int, planes: int) -> None:
        super().__init__()
        self.fuse = nn.Sequential(
            nn.Conv2d(decoder_channels + in_channels, DIE_DETAIL_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(DIE_DETAIL_CHANNELS),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(DIE_DETAIL_CHANNELS, planes, 3, padding=1)

    def forward(self, decoded: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mask (and region) logits from the decoder output and the input it was computed from."""
        return self.out(self.fuse(torch.cat([decoded, x], dim=1)))


class WaferOutputs(NamedTuple):
    """Everything one forward pass computes."""

    mask_logits: torch.Tensor
    wafer_logits: torch.Tensor
    embedding: torch.Tensor
    region_logits: torch.Tensor | None


class WaferNet(nn.Module):
    """U-Net (die masks) + pooled multi-level encoder features -> embedding -> wafer logits.

    Why several levels, each widened: the deepest level of a depth-4
    MobileNetV3-small has only 48 channels at 1/16 resolution, a thin input
    for nine classes, and a one-die scratch is sharpest at 1/4-1/8. MobileNetV3
    classifies through a wide 1x1 "conv head" before pooling; here each of the
    last ``len(head_channels)`` levels gets one. They run on the small
    low-resolution maps, so they cost a few percent of the U-Net's compute.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        #: Output planes of the segmentation head: die-mask logits, then region planes.
        self.mask_planes = len(PATTERNS) + (len(REGION_PATTERNS) if cfg.region_head else 0)
        unet = smp.Unet(
            encoder_name=cfg.encoder,
            encoder_weights=None,  # no network access; binary maps are far from ImageNet
            encoder_depth=cfg.encoder_depth,
            decoder_channels=cfg.decoder_channels,
            in_channels=cfg.in_channels,
            classes=self.mask_planes,
        )
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        # One of the two mask heads: smp's conv on the decoder output, or DieDetail.
        self.seg_head = None if cfg.input_skip else unet.segmentation_head
        self.die_detail = (
            DieDetail(cfg.decoder_channels[-1], cfg.in_channels, self.mask_planes) if cfg.input_skip else None
        )
        levels = self.encoder.out_channels[-len(cfg.head_channels):]
        self.expand = nn.ModuleList(expand(c, w) for c, w in zip(levels, cfg.head_channels, strict=True))
        # Mean + max pooling: max keeps small patterns (Scratch, Loc) visible.
        self.embed = nn.Sequential(nn.Linear(2 * sum(cfg.head_channels), cfg.embedding_dim), nn.ReLU())
        self.head_dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.embedding_dim, len(PATTERNS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (mask_logits, wafer_logits, embedding): what serving runs."""
        out = self.outputs(x)
        return out.mask_logits, out.wafer_logits, out.embedding

    def outputs(self, x: torch.Tensor, decode: torch.Tensor | None = None) -> WaferOutputs:
        """Run the network once and return every head's output.

        ``decode`` (bool, ``(N,)``) picks the maps whose die masks (and region
        planes) are computed, in batch order; ``None`` decodes all. Why:
        training has die targets for synthetic maps only, and the real maps,
        62 % of every batch, went through the decoder for nothing: the step
        took 1.23x as long (docs/model.md, "Training speed").
        """
        feats = self.encoder(x)
        if decode is None:
            mask_logits = self._mask_logits(feats, x)
        elif bool(decode.any()):
            mask_logits = self._mask_logits([f[decode] for f in feats], x[decode])
        else:  # a batch of real maps only: nothing to decode
            mask_logits = x.new_zeros((0, self.mask_planes, *x.shape[2:]))
        region_logits = None
        if self.cfg.region_head:
            mask_logits, region_logits = mask_logits[:, : len(PATTERNS)], mask_logits[:, len(PATTERNS) :]
        levels = feats[-len(self.expand):]
        wide = [conv(f) for conv, f in zip(self.expand, levels, strict=True)]
        pooled = torch.cat([w.mean(dim=(2, 3)) for w in wide] + [w.amax(dim=(2, 3)) for w in wide], dim=1)
        emb = self.embed(pooled)
        return WaferOutputs(mask_logits, self.head(self.head_dropout(emb)), emb, region_logits)

    def _mask_logits(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Decode ``feats`` (of the maps ``x``) into mask and region logits."""
        decoded = self.decoder(feats)
        if self.die_detail is not None:
            return self.die_detail(decoded, x)
        assert self.seg_head is not None  # __init__ builds exactly one of the two
        return self.seg_head(decoded)
