"""DeepSpeed engine construction, the train/eval loop and checkpointing."""
