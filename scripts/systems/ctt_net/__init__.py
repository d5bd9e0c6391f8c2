"""CTT-Net (Wang et al., IEEE BIBM 2022, arXiv 2212.05794): post-operative visual acuity from two
OCT B-scans and the pre-operative acuity, with the paper's baselines, on a 3-D macula simulator or
a user's own images."""
