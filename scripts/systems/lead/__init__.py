"""LEAD (Sun et al., WSDM 2024, arXiv 2212.05225): layer-wise score-distribution distillation for dense
retrieval. Retrieval sets (`retrieval_set`, `corpus`, `reverse_dictionary`, `user_data`), BM25, the MiniLM
teacher, students and their distillation through `Trainer` (`training`), the comparison (`experiment`) and
`frugal lead data | eval | distill` (`command`); the losses are in `frugal.transforms.retrieval_distill`."""
