//! RNS-CKKS: parameters, encoder, keys, encryption, evaluator, serialization.
