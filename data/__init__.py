"""Data: raw benchmark readers, ETEGRec splits, interests, embeddings and training batches."""
