"""Training-side code (torch, smp, albumentations). Never imported by serving.

Importing the package first runs the torchvision compatibility shim, so every
``ml.training.*`` module can import smp/timm in any order.
"""

from ml.training import torch_compat as torch_compat
