//! Versioned binary files for keys and ciphertexts.
