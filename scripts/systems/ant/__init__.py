"""ANT adaptive numeric types (MICRO'22, arXiv 2208.14286) on whole models: a ResNet (PTQ and QAT)
and the pretrained all-MiniLM-L6-v2."""
