"""Training side: read shards, (later) models, losses, trainer, evaluation, export."""
