//! Round trips and every refusal of the file formats.
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::*;
use crate::ckks::{Decryptor, Encoder, Encryptor, Evaluator, KeyGenerator, Preset, Sampler};

struct Fixture {
    ctx: Arc<Context>,
    sk: SecretKey,
    pk: PublicKey,
    keys: EvaluationKeys,
    cts: Vec<Ciphertext>,
    values: Vec<Vec<f64>>,
}

fn context(preset: &str) -> Arc<Context> {
    let params = Preset::by_name(preset).unwrap().parameters(true).unwrap();
    Context::new(&params).unwrap()
}

fn values(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ctx = context("toy1024");
        let mut kg = KeyGenerator::with_sampler(ctx.clone(), Sampler::from_seed_insecure(1));
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let keys = kg.evaluation_keys(&sk, &[1, 2, -1], true).unwrap();
        let enc = Encoder::new(ctx.clone());
        let mut encryptor = Encryptor::with_sampler(ctx.clone(), Sampler::from_seed_insecure(2));
        let params = ctx.params();
        let values: Vec<Vec<f64>> = (0..3).map(|i| values(10 + i, params.slots())).collect();
        let cts = values
            .iter()
            .map(|v| {
                let pt = enc
                    .encode(v, params.max_level(), params.default_scale())
                    .unwrap();
                encryptor.encrypt(&pt, &pk).unwrap()
            })
            .collect();
        Fixture {
            ctx,
            sk,
            pk,
            keys,
            cts,
            values,
        }
    })
}

fn decrypt(f: &Fixture, sk: &SecretKey, ct: &Ciphertext) -> Vec<f64> {
    let pt = Decryptor::new(f.ctx.clone()).decrypt(ct, sk).unwrap();
    Encoder::new(f.ctx.clone()).decode(&pt)
}

fn assert_close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-3, "{x} vs {y}");
    }
}

/// Rewrites the CRC trailer after a deliberate edit, so that the specific check fires.
fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Loads `bytes` as every kind; every attempt must be an error.
fn load_any(bytes: &[u8], ctx: &Context) -> [bool; 5] {
    [
        ciphertexts_from_bytes(bytes, ctx).is_err(),
        ciphertext_from_bytes(bytes, ctx).is_err(),
        public_key_from_bytes(bytes, ctx).is_err(),
        evaluation_keys_from_bytes(bytes, ctx).is_err(),
        secret_key_from_bytes(bytes, ctx).is_err(),
    ]
}

/// One serialized object of every kind.
fn all_kinds(f: &Fixture) -> Vec<(ObjectKind, Vec<u8>)> {
    let p = f.ctx.params();
    vec![
        (
            ObjectKind::SecretKey,
            secret_key_to_bytes(p, &f.sk).unwrap().to_vec(),
        ),
        (
            ObjectKind::PublicKey,
            public_key_to_bytes(p, &f.pk).unwrap(),
        ),
        (
            ObjectKind::EvaluationKeys,
            evaluation_keys_to_bytes(p, &f.keys).unwrap(),
        ),
        (
            ObjectKind::Ciphertext,
            ciphertext_to_bytes(p, f.sk.key_set(), &f.cts[0]).unwrap(),
        ),
        (
            ObjectKind::CiphertextTensor,
            ciphertexts_to_bytes(p, &label(f), &f.cts).unwrap(),
        ),
    ]
}

/// A job's label for the fixture's ciphertexts.
fn label(f: &Fixture) -> CiphertextLabel {
    CiphertextLabel {
        key_set: f.sk.key_set(),
        content: Content::InputBatch,
        job: JobId([7; 16]),
        batch: 3,
        images: 512,
        model: [9; 32],
    }
}

#[test]
fn ciphertext_tensor_round_trip_decrypts() {
    let f = fixture();
    let p = f.ctx.params();
    let bytes = ciphertexts_to_bytes(p, &label(f), &f.cts).unwrap();
    assert_eq!(&bytes[..8], b"CRYPTODL");
    assert_eq!(bytes.len(), 128 + 3 * 2 * 4 * 1024 * 4 + 4);
    let (back, got) = ciphertexts_from_bytes(&bytes, &f.ctx).unwrap();
    assert_eq!(back, f.cts);
    assert_eq!(got, label(f), "the label round-trips");
    for (ct, v) in back.iter().zip(&f.values) {
        assert_close(&decrypt(f, &f.sk, ct), v);
    }
    // a single ciphertext, also loadable as a tensor of one
    let one = ciphertext_to_bytes(p, f.sk.key_set(), &f.cts[1]).unwrap();
    assert_eq!(
        ciphertext_from_bytes(&one, &f.ctx).unwrap(),
        (f.cts[1].clone(), f.sk.key_set())
    );
    assert_eq!(
        ciphertexts_from_bytes(&one, &f.ctx).unwrap(),
        (
            vec![f.cts[1].clone()],
            CiphertextLabel::unlabelled(f.sk.key_set())
        )
    );
    // an empty tensor
    let empty = ciphertexts_to_bytes(p, &label(f), &[]).unwrap();
    assert!(ciphertexts_from_bytes(&empty, &f.ctx).unwrap().0.is_empty());
}

#[test]
fn size3_and_lower_level_ciphertexts_round_trip() {
    let f = fixture();
    let p = f.ctx.params();
    let eval = Evaluator::new(f.ctx.clone());
    let prod = eval.mul(&f.cts[0], &f.cts[1]).unwrap();
    assert_eq!(prod.size(), 3);
    let (back, _) = ciphertext_from_bytes(
        &ciphertext_to_bytes(p, KeySetId::NONE, &prod).unwrap(),
        &f.ctx,
    )
    .unwrap();
    assert_eq!(back, prod);
    let want: Vec<f64> = f.values[0]
        .iter()
        .zip(&f.values[1])
        .map(|(a, b)| a * b)
        .collect();
    assert_close(&decrypt(f, &f.sk, &back), &want);

    let mut low = f.cts.clone();
    for ct in &mut low {
        eval.rescale_assign(ct).unwrap();
    }
    let (back, _) =
        ciphertexts_from_bytes(&ciphertexts_to_bytes(p, &label(f), &low).unwrap(), &f.ctx).unwrap();
    assert_eq!(back, low);
    assert_eq!(back[0].level(), p.max_level() - 1);
}

#[test]
fn key_files_round_trip() {
    let f = fixture();
    let p = f.ctx.params();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    save_secret_key(path("sk.bin"), p, &f.sk).unwrap();
    save_public_key(path("pk.bin"), p, &f.pk).unwrap();
    save_evaluation_keys(path("evk.bin"), p, &f.keys).unwrap();
    save_ciphertexts(path("cts.bin"), p, &label(f), &f.cts).unwrap();
    save_ciphertext(path("ct.bin"), p, f.sk.key_set(), &f.cts[2]).unwrap();

    let sk = load_secret_key(path("sk.bin"), &f.ctx).unwrap();
    assert_eq!(sk.coeffs(), f.sk.coeffs());
    assert_eq!(sk.key_set(), f.sk.key_set());
    assert_eq!(sk.qp(), f.sk.qp());
    let pk = load_public_key(path("pk.bin"), &f.ctx).unwrap();
    assert_eq!(pk, f.pk);
    assert_eq!(pk.key_set, f.sk.key_set());
    let keys = load_evaluation_keys(path("evk.bin"), &f.ctx).unwrap();
    assert_eq!(keys, f.keys);
    assert_eq!(keys.key_set, f.sk.key_set());
    assert_eq!(keys.galois.len(), 4);
    let (cts, l) = load_ciphertexts(path("cts.bin"), &f.ctx).unwrap();
    assert_eq!((&cts, l), (&f.cts, label(f)));
    assert_eq!(load_ciphertext(path("ct.bin"), &f.ctx).unwrap().0, f.cts[2]);

    // loaded keys work: encrypt with the loaded public key, decrypt with the loaded secret
    let enc = Encoder::new(f.ctx.clone());
    let pt = enc
        .encode(&f.values[0], p.max_level(), p.default_scale())
        .unwrap();
    let mut encryptor = Encryptor::with_sampler(f.ctx.clone(), Sampler::from_seed_insecure(3));
    let ct = encryptor.encrypt(&pt, &pk).unwrap();
    assert_close(&decrypt(f, &sk, &ct), &f.values[0]);
    // and rotate with the loaded Galois keys
    let eval = Evaluator::new(f.ctx.clone());
    let rot = eval
        .rotate(&cts[0], 1, &eval.upload_keys(&keys).unwrap())
        .unwrap();
    let got = decrypt(f, &sk, &rot);
    let slots = p.slots();
    let want: Vec<f64> = (0..slots).map(|i| f.values[0][(i + 1) % slots]).collect();
    assert_close(&got, &want);

    // headers, atomic writes (no temporary left behind), overwrite, permissions
    let h = read_header(path("evk.bin")).unwrap();
    assert_eq!(h.kind, ObjectKind::EvaluationKeys);
    assert_eq!(h.fingerprint, p.fingerprint());
    assert_eq!((h.version, h.log_n, h.key_set), (2, 10, f.sk.key_set()));
    save_ciphertexts(path("cts.bin"), p, &label(f), &f.cts[..1]).unwrap();
    assert_eq!(
        load_ciphertexts(path("cts.bin"), &f.ctx).unwrap().0.len(),
        1
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |n| std::fs::metadata(path(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("sk.bin"), 0o600);
        assert_eq!(mode("pk.bin"), 0o644);
    }
    // a missing file is an I/O error naming the path
    let e = load_public_key(path("missing.bin"), &f.ctx).unwrap_err();
    assert!(matches!(e, FileError::Io { .. }));
    assert!(e.to_string().contains("missing.bin"));
}

#[test]
fn evaluation_keys_hold_no_secret() {
    // By construction: EvaluationKeys only has switching keys. Check no window of s (NTT
    // form) or of its coefficients appears in the file.
    let f = fixture();
    let bytes = evaluation_keys_to_bytes(f.ctx.params(), &f.keys).unwrap();
    let window =
        |words: &[u32]| -> Vec<u8> { words.iter().flat_map(|w| w.to_le_bytes()).collect() };
    let n = f.ctx.n();
    for limb in 0..f.sk.qp().len() / n {
        let w = window(&f.sk.qp()[limb * n..limb * n + 8]);
        assert!(!bytes.windows(w.len()).any(|x| x == w.as_slice()));
    }
    let coeffs: Vec<u8> = f.sk.coeffs()[..64].iter().map(|&c| c as u8).collect();
    assert!(!bytes.windows(64).any(|x| x == coeffs.as_slice()));
    assert_eq!(
        header_from_bytes(&bytes).unwrap().kind,
        ObjectKind::EvaluationKeys
    );
}

#[test]
fn truncated_files_are_errors() {
    let f = fixture();
    for (kind, bytes) in all_kinds(f) {
        let len = bytes.len();
        let mut cuts: Vec<usize> = (0..len.min(600)).collect();
        cuts.extend((0..200).map(|i| i * len / 200));
        cuts.extend(len.saturating_sub(8)..len);
        for cut in cuts {
            let e = load_any(&bytes[..cut], &f.ctx);
            assert!(e.iter().all(|&x| x), "{kind:?} cut at {cut}");
        }
        // a real truncation of an intact header says so
        let e = ciphertexts_from_bytes(&bytes[..len - 100], &f.ctx);
        if kind == ObjectKind::CiphertextTensor {
            let e = e.unwrap_err();
            assert!(matches!(e, FileError::Truncated { .. }), "{e}");
            assert!(e.to_string().contains("truncated"));
        }
        // and trailing bytes are refused too
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(load_any(&long, &f.ctx).iter().all(|&x| x));
    }
    assert!(matches!(
        ciphertexts_from_bytes(&[], &f.ctx),
        Err(FileError::Truncated { .. })
    ));
}

#[test]
fn every_flipped_bit_of_a_secret_key_is_detected() {
    let f = fixture();
    let bytes = secret_key_to_bytes(f.ctx.params(), &f.sk).unwrap().to_vec();
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(secret_key_from_bytes(&b, &f.ctx).is_err(), "bit {bit}");
    }
}

#[test]
fn flipped_bits_are_detected() {
    let f = fixture();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for (kind, bytes) in all_kinds(f) {
        let len = bytes.len();
        // every bit of the header and trailer, random bits of the payload
        let mut bits: Vec<usize> = (0..8 * 64.min(len)).collect();
        bits.extend(8 * (len - 4)..8 * len);
        bits.extend((0..300).map(|_| rng.random_range(0..8 * len)));
        for bit in bits {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let e = load_any(&b, &f.ctx);
            assert!(e.iter().all(|&x| x), "{kind:?} bit {bit}");
        }
    }
    // payload corruption is a checksum error
    let mut b = ciphertext_to_bytes(f.ctx.params(), f.sk.key_set(), &f.cts[0]).unwrap();
    b[1000] ^= 4;
    let e = ciphertext_from_bytes(&b, &f.ctx).unwrap_err();
    assert!(matches!(e, FileError::ChecksumMismatch { .. }), "{e}");
    assert!(e.to_string().contains("corrupted"));
}

#[test]
fn wrong_kind_names_what_the_file_holds() {
    let f = fixture();
    let sk = secret_key_to_bytes(f.ctx.params(), &f.sk).unwrap();
    let e = evaluation_keys_from_bytes(&sk, &f.ctx).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::WrongKind {
                expected: ObjectKind::EvaluationKeys,
                found: ObjectKind::SecretKey,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("holds a secret key"), "{e}");
    for (kind, bytes) in all_kinds(f) {
        let ok = load_any(&bytes, &f.ctx);
        // exactly the loaders of its own kind succeed (a single ciphertext also loads as a tensor)
        let expect = match kind {
            ObjectKind::CiphertextTensor => [false, true, true, true, true],
            ObjectKind::Ciphertext => [false, false, true, true, true],
            ObjectKind::PublicKey => [true, true, false, true, true],
            ObjectKind::EvaluationKeys => [true, true, true, false, true],
            _ => [true, true, true, true, false],
        };
        assert_eq!(ok, expect, "{kind:?}");
    }
    let tensor = ciphertexts_to_bytes(f.ctx.params(), &label(f), &f.cts).unwrap();
    assert!(matches!(
        ciphertext_from_bytes(&tensor, &f.ctx),
        Err(FileError::WrongKind { .. })
    ));
}

#[test]
fn other_parameters_are_refused() {
    let f = fixture();
    let other = context("toy4096");
    for (kind, bytes) in all_kinds(f) {
        let e = load_any(&bytes, &other);
        assert!(e.iter().all(|&x| x), "{kind:?}");
    }
    let bytes = public_key_to_bytes(f.ctx.params(), &f.pk).unwrap();
    let e = public_key_from_bytes(&bytes, &other).unwrap_err();
    match &e {
        FileError::ParameterMismatch {
            expected, found, ..
        } => {
            assert_eq!(*expected, other.params().fingerprint());
            assert_eq!(*found, f.ctx.params().fingerprint());
        }
        e => panic!("{e}"),
    }
    assert!(
        e.to_string().contains("made for different parameters"),
        "{e}"
    );
    // saving an object of other parameters is refused too
    assert!(matches!(
        public_key_to_bytes(other.params(), &f.pk),
        Err(FileError::ShapeMismatch { .. })
    ));
    assert!(ciphertexts_to_bytes(other.params(), &label(f), &f.cts).is_err());
    assert!(evaluation_keys_to_bytes(other.params(), &f.keys).is_err());
    assert!(secret_key_to_bytes(other.params(), &f.sk).is_err());
}

/// Byte offsets of the ciphertext header fields (format 2).
const COUNT: usize = 40;
const SIZE: usize = 44;
const LEVEL: usize = 48;
const SCALE: usize = 56;
const CONTENT: usize = 64;
const PAYLOAD: usize = 128;

fn edited(bytes: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    fix_crc(&mut b);
    b
}

#[test]
fn header_checks_have_their_own_errors() {
    let f = fixture();
    let ctx = &f.ctx;
    let p = ctx.params();
    let bytes = ciphertexts_to_bytes(p, &label(f), &f.cts).unwrap();

    // absurd counts: refused before allocating (too large), or as truncated
    let e =
        ciphertexts_from_bytes(&edited(&bytes, COUNT, &u32::MAX.to_le_bytes()), ctx).unwrap_err();
    assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
    let e =
        ciphertexts_from_bytes(&edited(&bytes, COUNT, &1000u32.to_le_bytes()), ctx).unwrap_err();
    assert!(matches!(e, FileError::Truncated { .. }), "{e}");
    // without fixing the CRC it is still an error
    let mut b = bytes.clone();
    b[COUNT..COUNT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(ciphertexts_from_bytes(&b, ctx).is_err());

    let e = ciphertexts_from_bytes(&edited(&bytes, SIZE, &7u32.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::InvalidField {
                field: "size",
                found: 7,
                ..
            }
        ),
        "{e}"
    );
    let e = ciphertexts_from_bytes(&edited(&bytes, LEVEL, &9u32.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::LevelOutOfRange {
                level: 9,
                max: 3,
                ..
            }
        ),
        "{e}"
    );
    for bad in [f64::NAN, f64::INFINITY, 0.5, -3.0] {
        let e = ciphertexts_from_bytes(&edited(&bytes, SCALE, &bad.to_bits().to_le_bytes()), ctx)
            .unwrap_err();
        assert!(matches!(e, FileError::InvalidScale { .. }), "{e}");
    }
    // a residue not below its prime
    let q0 = p.q()[0];
    let e = ciphertexts_from_bytes(&edited(&bytes, PAYLOAD + 4 * 5, &q0.to_le_bytes()), ctx)
        .unwrap_err();
    assert!(
        matches!(e, FileError::ResidueOutOfRange { index: 5, value, modulus, .. } if value == q0 && modulus == q0),
        "{e}"
    );
    // in the second limb, checked against q_1
    let q1 = p.q()[1];
    let at = PAYLOAD + 4 * 1024;
    let e = ciphertexts_from_bytes(&edited(&bytes, at, &q1.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(e, FileError::ResidueOutOfRange { modulus, .. } if modulus == q1),
        "{e}"
    );

    // an unknown content code
    let e = ciphertexts_from_bytes(&edited(&bytes, CONTENT, &9u32.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::InvalidField {
                field: "content",
                found: 9,
                ..
            }
        ),
        "{e}"
    );

    // format version (read only once the CRC matches) and magic
    let e = ciphertexts_from_bytes(&edited(&bytes, 8, &3u16.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::NewerFormat {
                found: 3,
                supported: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("newer cryptodl (format v3"), "{e}");
    assert!(e.to_string().contains("upgrade"), "{e}");
    let e = ciphertexts_from_bytes(&edited(&bytes, 8, &1u16.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::OlderFormat {
                found: 1,
                supported: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("run keygen and encrypt again"),
        "{e}"
    );
    // a flipped bit in the version or the fingerprint, CRC not fixed: corruption, not a newer
    // format nor other parameters
    for at in [8, 9, 12, 19] {
        let mut b = bytes.clone();
        b[at] ^= 2;
        let e = ciphertexts_from_bytes(&b, ctx).unwrap_err();
        assert!(
            matches!(e, FileError::ChecksumMismatch { .. }),
            "byte {at}: {e}"
        );
        let e = header_from_bytes(&b).unwrap_err();
        assert!(
            matches!(e, FileError::ChecksumMismatch { .. }),
            "byte {at}: {e}"
        );
    }
    let e = ciphertexts_from_bytes(&edited(&bytes, 8, &0u16.to_le_bytes()), ctx).unwrap_err();
    assert!(matches!(e, FileError::UnknownFormat { .. }), "{e}");
    let e = ciphertexts_from_bytes(&edited(&bytes, 10, &77u16.to_le_bytes()), ctx).unwrap_err();
    assert!(matches!(e, FileError::UnknownKind { code: 77, .. }), "{e}");
    let e = ciphertexts_from_bytes(b"PK\x03\x04 this is a zip file", ctx).unwrap_err();
    assert!(matches!(e, FileError::NotCryptodl { .. }), "{e}");
    assert!(e.to_string().contains("not a cryptodl file"), "{e}");
    // a corrupted fingerprint with a valid CRC looks like other parameters; without, corruption
    let e = ciphertexts_from_bytes(&edited(&bytes, 12, &[0xAB]), ctx).unwrap_err();
    assert!(matches!(e, FileError::ParameterMismatch { .. }), "{e}");
    let mut b = bytes.clone();
    b[12] ^= 1;
    let e = ciphertexts_from_bytes(&b, ctx).unwrap_err();
    assert!(matches!(e, FileError::ChecksumMismatch { .. }), "{e}");

    // secret key: coefficients outside {-1, 0, 1}
    let sk = secret_key_to_bytes(p, &f.sk).unwrap();
    let e = secret_key_from_bytes(&edited(&sk, 48 + 10, &[2]), ctx).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::InvalidSecretCoefficient {
                index: 10,
                value: 2,
                ..
            }
        ),
        "{e}"
    );

    // evaluation keys: Galois elements, counts, relin flag
    let evk = evaluation_keys_to_bytes(p, &f.keys).unwrap();
    let e = evaluation_keys_from_bytes(&edited(&evk, 56, &4u64.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(e, FileError::InvalidGaloisElement { element: 4, .. }),
        "{e}"
    );
    let e = evaluation_keys_from_bytes(&edited(&evk, 64, &3u64.to_le_bytes()), ctx).unwrap_err();
    assert!(matches!(e, FileError::InvalidGaloisElement { .. }), "{e}");
    let e =
        evaluation_keys_from_bytes(&edited(&evk, 52, &u32::MAX.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::InvalidField {
                field: "galois_count",
                ..
            }
        ),
        "{e}"
    );
    let e = evaluation_keys_from_bytes(&edited(&evk, 48, &4u32.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(e, FileError::InvalidField { field: "flags", .. }),
        "{e}"
    );
    let e = evaluation_keys_from_bytes(&edited(&evk, 40, &9u32.to_le_bytes()), ctx).unwrap_err();
    assert!(
        matches!(e, FileError::InvalidField { field: "dnum", .. }),
        "{e}"
    );
}

#[test]
fn saving_checks_the_objects() {
    let f = fixture();
    let p = f.ctx.params();
    let mut cts = f.cts.clone();
    cts[2].set_scale(p.default_scale() * 2.0);
    let e = ciphertexts_to_bytes(p, &label(f), &cts).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::InconsistentTensor {
                index: 2,
                field: "scale",
                ..
            }
        ),
        "{e}"
    );
    let mut cts = f.cts.clone();
    Evaluator::new(f.ctx.clone())
        .rescale_assign(&mut cts[1])
        .unwrap();
    let scale = cts[0].scale();
    cts[1].set_scale(scale);
    let e = ciphertexts_to_bytes(p, &label(f), &cts).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::InconsistentTensor {
                index: 1,
                field: "level",
                ..
            }
        ),
        "{e}"
    );
    let mut ct = f.cts[0].clone();
    ct.set_scale(f64::NAN);
    assert!(matches!(
        ciphertext_to_bytes(p, KeySetId::NONE, &ct),
        Err(FileError::InvalidScale { .. })
    ));
    // a failed save leaves nothing behind
    let dir = tempfile::tempdir().unwrap();
    assert!(save_ciphertext(dir.path().join("x.bin"), p, KeySetId::NONE, &ct).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // reading a non-cryptodl file
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let e = load_ciphertexts(&junk, &f.ctx).unwrap_err();
    assert!(matches!(e, FileError::NotCryptodl { .. }), "{e}");
    assert!(e.to_string().contains("junk.bin"), "{e}");
    assert!(matches!(
        read_header(&junk),
        Err(FileError::NotCryptodl { .. })
    ));
    // truncated files on disk
    let full = dir.path().join("full.bin");
    save_ciphertexts(&full, p, &label(f), &f.cts).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.bin");
    for len in [0, 5, 8, 30, 60, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = load_ciphertexts(&cut, &f.ctx).unwrap_err();
        assert!(matches!(e, FileError::Truncated { .. }), "{len}: {e}");
    }
    // a file above the size cap is refused before it is read (sparse file: no disk used)
    let huge = dir.path().join("huge.bin");
    let file = std::fs::File::create(&huge).unwrap();
    if file.set_len(MAX_PAYLOAD_BYTES + (1 << 20)).is_ok() {
        let e = load_evaluation_keys(&huge, &f.ctx).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { .. }), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_corruptions_are_errors(
        kind in 0usize..5,
        edits in proptest::collection::vec((any::<u64>(), 1u8..=255), 1..4),
        cut in proptest::option::of(any::<u64>()),
    ) {
        let f = fixture();
        let original = all_kinds(f).swap_remove(kind).1;
        let mut b = original.clone();
        for (at, x) in edits {
            let i = (at % b.len() as u64) as usize;
            b[i] ^= x;
        }
        if let Some(c) = cut {
            b.truncate((c % b.len() as u64) as usize);
        }
        // edits at one place may cancel out
        prop_assume!(b != original);
        prop_assert!(load_any(&b, &f.ctx).iter().all(|&x| x));
    }
}

#[test]
fn a_forged_or_swapped_secret_key_is_refused() {
    let f = fixture();
    let p = f.ctx.params();
    let sk = secret_key_to_bytes(p, &f.sk).unwrap().to_vec();
    // All-zero coefficients with a valid CRC: its coefficients do not hash to the stored id.
    let mut zero = sk.clone();
    zero[48..48 + p.n()].fill(0);
    fix_crc(&mut zero);
    let e = secret_key_from_bytes(&zero, &f.ctx).unwrap_err();
    assert!(matches!(e, FileError::ForgedSecretKey { .. }), "{e}");
    assert!(e.to_string().contains("forged or damaged"), "{e}");
    // Another key's id spliced in: refused too.
    let mut other = sk.clone();
    other[24..40].copy_from_slice(&[1; 16]);
    fix_crc(&mut other);
    assert!(matches!(
        secret_key_from_bytes(&other, &f.ctx),
        Err(FileError::ForgedSecretKey { .. })
    ));
    // A key of another keygen has another id.
    let ctx = f.ctx.clone();
    let sk2 = KeyGenerator::with_sampler(ctx, Sampler::from_seed_insecure(99)).secret_key();
    assert_ne!(sk2.key_set(), f.sk.key_set());
}

#[cfg(unix)]
#[test]
fn only_regular_files_are_read() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("eval.keys");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = load_evaluation_keys(&fifo, &f.ctx).unwrap_err();
    assert!(matches!(e, FileError::NotAFile { .. }), "{e}");
    assert!(matches!(
        read_header(&fifo),
        Err(FileError::NotAFile { .. })
    ));
    let e = load_ciphertexts(dir.path(), &f.ctx).unwrap_err();
    assert!(
        matches!(e, FileError::NotAFile { .. } | FileError::Io { .. }),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Fuzzing of every decoder: random bytes (behind a valid magic, or not) are an error, never
    /// a panic.
    #[test]
    fn random_bytes_are_errors(
        magic in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let f = fixture();
        let mut b = if magic { MAGIC.to_vec() } else { Vec::new() };
        b.extend_from_slice(&body);
        prop_assert!(load_any(&b, &f.ctx).iter().all(|&x| x));
        let _ = header_from_bytes(&b);
    }
}
