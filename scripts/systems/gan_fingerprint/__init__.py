"""GAN-fingerprint augmentation (Wang et al., arXiv 2212.13466): detectors that generalize to unseen generators."""
