#!/usr/bin/env python3
"""Median times of Microsoft SEAL's CKKS operations on cryptodl's chains, for ours/SEAL ratios.

SEAL comes from TenSEAL's wheel (`pip install tenseal`, which bundles SEAL 4.1 and exposes its API
as `tenseal.sealapi`); nothing is built here. Same operations as `cryptodl bench ops`: encrypt
(public key), decrypt + decode, add, mul_const (multiply by an encoded constant + rescale),
mul_relin (multiply + relinearize + rescale), rescale, rotate by one slot; single thread, inputs
uniform in [-1, 1], at the top level.

    python3 benches/seal/seal_ops.py --preset n8192 --reps 15 > seal-n8192.json
"""
import argparse
import json
import random
import statistics
import time

import tenseal.sealapi as seal

CHAINS = {
    # cryptodl's presets: data primes, then special primes (bits), and the scale.
    "n8192": (8192, [30] + [26] * 6 + [30], 26),
    "n16384": (16384, [30] + [26] * 12 + [30] * 3, 26),
}


def median_us(reps, f, setup=None):
    times = []
    for i in range(reps + 1):
        arg = setup() if setup else None
        t = time.perf_counter()
        f(arg)
        dt = (time.perf_counter() - t) * 1e6
        if i:  # the first run warms up
            times.append(dt)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(CHAINS), default="n8192")
    ap.add_argument("--reps", type=int, default=15)
    a = ap.parse_args()
    n, bits, log_scale = CHAINS[a.preset]
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(n, bits))
    ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    keygen = seal.KeyGenerator(ctx)
    sk = keygen.secret_key()
    pk = seal.PublicKey()
    keygen.create_public_key(pk)
    rlk = seal.RelinKeys()
    keygen.create_relin_keys(rlk)
    gk = seal.GaloisKeys()
    # The Galois element of a rotation by one slot (SEAL's generator is 3; the binding takes
    # elements, not steps).
    keygen.create_galois_keys([3], gk)
    enc = seal.CKKSEncoder(ctx)
    encryptor = seal.Encryptor(ctx, pk)
    decryptor = seal.Decryptor(ctx, sk)
    ev = seal.Evaluator(ctx)
    scale = 2.0**log_scale
    slots = n // 2
    rnd = random.Random(1)
    va = [rnd.uniform(-1, 1) for _ in range(slots)]
    vb = [rnd.uniform(-1, 1) for _ in range(slots)]
    pa, pb = seal.Plaintext(), seal.Plaintext()
    enc.encode(va, scale, pa)
    enc.encode(vb, scale, pb)
    ca, cb = seal.Ciphertext(), seal.Ciphertext()
    encryptor.encrypt(pa, ca)
    encryptor.encrypt(pb, cb)
    reps = a.reps
    out = {}

    def encrypt(_):
        c = seal.Ciphertext()
        encryptor.encrypt(pa, c)

    def decrypt(_):
        p = seal.Plaintext()
        decryptor.decrypt(ca, p)
        enc.decode_double(p)

    def add(_):
        c = seal.Ciphertext()
        ev.add(ca, cb, c)

    const = seal.Plaintext()
    enc.encode([0.7] * slots, scale, const)

    def mul_const(_):
        c = seal.Ciphertext()
        ev.multiply_plain(ca, const, c)
        ev.rescale_to_next_inplace(c)

    def mul_relin(_):
        c = seal.Ciphertext()
        ev.multiply(ca, cb, c)
        ev.relinearize_inplace(c, rlk)
        ev.rescale_to_next_inplace(c)

    def prod():
        c = seal.Ciphertext()
        ev.multiply(ca, cb, c)
        ev.relinearize_inplace(c, rlk)
        return c

    def rescale(c):
        ev.rescale_to_next_inplace(c)

    def rotate(_):
        c = seal.Ciphertext()
        ev.rotate_vector(ca, 1, gk, c)

    out["encrypt"] = median_us(reps, encrypt)
    out["decrypt"] = median_us(reps, decrypt)
    out["add"] = median_us(4 * reps, add)
    out["mul_const"] = median_us(reps, mul_const)
    out["mul_relin"] = median_us(reps, mul_relin)
    out["rescale"] = median_us(reps, rescale, setup=prod)
    out["rotate"] = median_us(reps, rotate)
    print(json.dumps({"library": "Microsoft SEAL (tenseal.sealapi)", "preset": a.preset,
                      "n": n, "chain_bits": bits, "threads": 1, "median_us": out}, indent=2))


if __name__ == "__main__":
    main()
