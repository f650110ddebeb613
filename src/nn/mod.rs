//! Neural networks: polynomial activations, models, datasets, plaintext reference, training.
