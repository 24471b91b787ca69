"""Text encoders and the per-code channel embeddings."""
