"""Fine-tuning a group's LoRA candidate: the `Trainer` protocol and its TRL implementation
(`trainer`), the plain PyTorch loop it is benchmarked against (`loop`), what both share
(`base`) and the examples they take (`data`). Only this package imports the heavy ML stack
for training."""
