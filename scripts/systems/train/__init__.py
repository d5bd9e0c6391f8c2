"""The foundation's `frugal train`: a ResNet trained with the shared harness on built-in digits/shapes
or a user's CIFAR-10 / image folders, checkpointed and resumable."""
