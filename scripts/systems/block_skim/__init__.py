"""Block-Skim (Guan et al., AAAI 2022, arXiv 2112.08560; github.com/ChandlerGuan/blockskim) on the real
all-MiniLM-L6-v2: joint QA + skim-predictor fine-tune, pruned inference, EM/F1 against FLOPs and wall-clock."""
