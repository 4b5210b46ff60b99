"""Backbones: ``images (Tensor[B, 3, H, W]) -> tuple of feature maps``, finest level first."""
from detector.models.backbones.csp import CSPDarknet

__all__ = ["CSPDarknet"]
