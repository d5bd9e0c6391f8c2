"""ResGrad (Chen et al. 2022, arXiv 2212.14518): a small diffusion model refines a frozen FastSpeech 2 by
generating the residual (recording - FastSpeech 2 mel). Speech corpus (`phonemize`, `voice`, `corpus`),
front end and metrics (`features`, `metrics`), training through `Trainer` (`training`), the comparison with
full-mel and shallow diffusion (`experiment`) and `frugal tts corpus | train | eval | sweep |
synthesize` (`command`); schedules and the DDIM sampler are in `frugal.transforms.diffusion`, the models in
`frugal.models` (`fastspeech2`, `diffusion_denoisers`, `hifigan`)."""
