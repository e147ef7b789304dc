"""Lightning callbacks: checkpointing, reports, predictions, W&B, tuning, self-training rounds, pretraining."""
