"""clsp: Contrastive Learning with Synthetic Positives (Zeng et al., ECCV 2024).

An unconditional diffusion model trained on the user's images makes hard positives by interpolating
each image's bottleneck features during sampling; a contrastive learner trains with them as an extra
positive, and the encoder is evaluated by linear probe, kNN and transfer.
"""

__version__ = "0.1.0"
