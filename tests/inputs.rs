//! The user's own images (issue 12): a directory of PNG files and a `.npy` array each go through
//! keygen / encrypt / score / decrypt with a prediction per file name, equal to the plaintext
//! reference; bad inputs are clear errors naming the file, with nothing written; commands that
//! read a test split do not need the training files.

use std::path::Path;

use cryptodl::nn::dataset::DatasetKind;
use cryptodl::nn::model::Model;
use cryptodl::nn::reference;
use ndarray_npy::WriteNpyExt;

mod common;
use common::job::{cryptodl, job, json, Job};

/// The first `n` Fashion-MNIST test images (28 x 28) and labels.
fn fashion(n: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let t = DatasetKind::FashionMnist.load_test(None).unwrap().take(n);
    ((0..n).map(|i| t.image(i).to_vec()).collect(), t.labels)
}

fn write_npy<A: ndarray_npy::WritableElement>(path: &Path, a: &ndarray::ArrayD<A>) {
    a.write_npy(std::fs::File::create(path).unwrap()).unwrap();
}

/// Encrypts `input`, scores and decrypts into `pred.csv`; returns the CSV rows (source,
/// predicted, label) and decrypt's JSON.
fn round_trip(
    j: &Job,
    input: &Path,
    extra: &[&str],
    tag: &str,
) -> (Vec<(String, usize, String)>, serde_json::Value) {
    let enc = format!("enc-{tag}");
    let mut args = vec![
        "encrypt".to_string(),
        "--model".into(),
        j.p("m.safetensors"),
        "--keys".into(),
        j.p("a"),
        "--input".into(),
        input.to_str().unwrap().into(),
        "--out".into(),
        j.p(&enc),
        "--insecure".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (ok, _, e) = cryptodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{e}");
    let scored = format!("scored-{tag}");
    let (ok, _, e) = j.score("m.safetensors", "a", &enc, &scored);
    assert!(ok, "{e}");
    let csv = j.path(&format!("pred-{tag}.csv"));
    let (ok, out, e) = cryptodl(&[
        "decrypt",
        "--keys",
        &j.p("a"),
        "--in",
        &j.p(&scored),
        "--out",
        csv.to_str().unwrap(),
        "--insecure",
        "--json",
    ]);
    assert!(ok, "{e}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("index,source,predicted,label,logit_0"));
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].to_string(), f[2].parse().unwrap(), f[3].to_string())
        })
        .collect();
    (rows, json(&out))
}

#[test]
fn png_files_and_npy_arrays_are_scored_per_file_name() {
    let j = job();
    let model = Model::load(&j.path("m.safetensors")).unwrap();
    let (images, labels) = fashion(12);
    let reference: Vec<usize> = images
        .iter()
        .map(|p| {
            reference::argmax(
                &reference::forward(&model, &reference::normalize(&model, p)).unwrap(),
            )
        })
        .collect();
    // A directory of PNG files (and a file that is not an image, ignored).
    let dir = j.path("photos");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, p) in images.iter().enumerate() {
        image::GrayImage::from_raw(28, 28, p.clone())
            .unwrap()
            .save(dir.join(format!("item-{i:02}.png")))
            .unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    let (rows, _) = round_trip(&j, &dir, &[], "png");
    assert_eq!(rows.len(), 12);
    for (i, (source, predicted, label)) in rows.iter().enumerate() {
        assert_eq!(source, &format!("item-{i:02}.png"));
        assert_eq!(*predicted, reference[i], "{source}");
        assert_eq!(label, "");
    }
    // A uint8 .npy (N x H x W) with labels: the accuracy comes back too.
    let x = ndarray::ArrayD::from_shape_vec(vec![12, 28, 28], images.concat()).unwrap();
    write_npy(&j.path("x.npy"), &x);
    let y = ndarray::ArrayD::from_shape_vec(vec![12], labels.iter().map(|&l| l as i64).collect())
        .unwrap();
    write_npy(&j.path("y.npy"), &y);
    let (rows, r) = round_trip(&j, &j.path("x.npy"), &["--labels", &j.p("y.npy")], "npy");
    let want = reference
        .iter()
        .zip(&labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    assert_eq!(r["accuracy"].as_f64().unwrap(), want as f64 / 12.0);
    for (i, (source, predicted, label)) in rows.iter().enumerate() {
        assert_eq!(source, &format!("x.npy[{i}]"));
        assert_eq!(*predicted, reference[i]);
        assert_eq!(label, &labels[i].to_string());
    }
    // float32 in [0, 1], N x 1 x H x W.
    let xf = x
        .mapv(|p| p as f32 / 255.0)
        .into_shape_with_order(vec![12, 1, 28, 28])
        .unwrap();
    write_npy(&j.path("xf.npy"), &xf);
    let (rows, _) = round_trip(&j, &j.path("xf.npy"), &[], "f32");
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), reference);
    // The server never saw the names: they live beside the keys.
    let enc_files: Vec<String> = std::fs::read_dir(j.path("enc-png"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(enc_files.iter().all(|t| !t.contains("item-00.png")));
    assert!(std::fs::read_dir(j.path("a/jobs")).unwrap().count() >= 3);
}

/// `encrypt --input INPUT EXTRA...` of job `j` into `never/`, which must fail and write
/// nothing; returns stderr.
fn refused_encrypt(j: &Job, input: &Path, extra: &[&str]) -> String {
    let out = j.path("never");
    let mut args = vec![
        "encrypt".to_string(),
        "--model".into(),
        j.p("m.safetensors"),
        "--keys".into(),
        j.p("a"),
        "--out".into(),
        out.to_str().unwrap().into(),
        "--insecure".into(),
        "--input".into(),
        input.to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (ok, _, e) = cryptodl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok, "{input:?} was accepted");
    assert!(!out.exists(), "{input:?}: something was written");
    e
}

#[test]
fn bad_inputs_are_clear_errors_and_write_nothing() {
    let j = job();
    let (images, _) = fashion(4);
    let encrypt = |input: &Path, extra: &[&str]| refused_encrypt(&j, input, extra);
    // An image of the wrong size: refused, or scaled with --resize.
    let dir = j.path("mixed");
    std::fs::create_dir_all(&dir).unwrap();
    image::GrayImage::from_raw(28, 28, images[0].clone())
        .unwrap()
        .save(dir.join("a.png"))
        .unwrap();
    image::GrayImage::new(32, 32)
        .save(dir.join("b.png"))
        .unwrap();
    let e = encrypt(&dir, &[]);
    assert!(
        e.contains("b.png: a 32 x 32 image; the model reads 28 x 28 (pass --resize"),
        "{e}"
    );
    let (ok, out, e) = cryptodl(&[
        "encrypt",
        "--model",
        &j.p("m.safetensors"),
        "--keys",
        &j.p("a"),
        "--out",
        &j.p("resized"),
        "--insecure",
        "--input",
        dir.to_str().unwrap(),
        "--resize",
        "--json",
    ]);
    assert!(ok, "{e}");
    assert_eq!(json(&out)["images"], 2);
    // A file that says it is a PNG but is not.
    std::fs::write(dir.join("c.png"), b"\x89PNG but not really").unwrap();
    let e = encrypt(&dir, &["--resize"]);
    assert!(e.contains("c.png: not a readable PNG / JPEG image"), "{e}");
    // An empty directory.
    std::fs::create_dir_all(j.path("empty")).unwrap();
    let e = encrypt(&j.path("empty"), &[]);
    assert!(e.contains("no .png, .jpg or .jpeg images"), "{e}");
    // .npy of the wrong dtype, shape, range; truncated.
    let x = ndarray::ArrayD::from_shape_vec(vec![4, 28, 28], images.concat()).unwrap();
    write_npy(&j.path("i64.npy"), &x.mapv(|p| p as i64));
    assert!(encrypt(&j.path("i64.npy"), &[]).contains("dtype int64: images must be uint8"));
    write_npy(
        &j.path("hwc.npy"),
        &x.clone().into_shape_with_order(vec![4, 28, 28, 1]).unwrap(),
    );
    assert!(encrypt(&j.path("hwc.npy"), &[]).contains("channels-last"));
    write_npy(
        &j.path("small.npy"),
        &ndarray::ArrayD::<u8>::zeros(vec![4, 14, 14]),
    );
    assert!(encrypt(&j.path("small.npy"), &[]).contains("the model reads N x 1 x 28 x 28"));
    write_npy(&j.path("f255.npy"), &x.mapv(|p| p as f32));
    assert!(encrypt(&j.path("f255.npy"), &[]).contains("divide by 255"));
    write_npy(&j.path("ok.npy"), &x);
    let bytes = std::fs::read(j.path("ok.npy")).unwrap();
    std::fs::write(j.path("cut.npy"), &bytes[..bytes.len() / 2]).unwrap();
    let e = encrypt(&j.path("cut.npy"), &[]);
    assert!(e.contains("cut.npy") && e.contains("truncated"), "{e}");
    // Labels that do not match the images.
    write_npy(&j.path("y3.npy"), &ndarray::ArrayD::<i64>::zeros(vec![3]));
    let e = encrypt(&j.path("ok.npy"), &["--labels", &j.p("y3.npy")]);
    assert!(e.contains("3 labels for 4 images"), "{e}");
}

#[test]
fn a_test_split_alone_is_enough() {
    let j = job();
    let dir = j.path("only-test");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        let src = Path::new("/usr/share/datasets/fashion-mnist").join(name);
        if src.exists() {
            std::fs::copy(&src, dir.join(name)).unwrap();
        } else {
            let gz = format!("{name}.gz");
            std::fs::copy(src.with_file_name(&gz), dir.join(gz)).unwrap();
        }
    }
    let (ok, out, e) = cryptodl(&[
        "eval",
        "--model",
        &j.p("m.safetensors"),
        "--data-dir",
        dir.to_str().unwrap(),
        "--limit",
        "20",
        "--json",
        "--no-candle",
    ]);
    assert!(ok, "{e}");
    assert_eq!(json(&out)["samples"], 20);
    let (ok, _, e) = cryptodl(&[
        "demo",
        "--data-dir",
        dir.to_str().unwrap(),
        "--images",
        "8",
        "--json",
    ]);
    assert!(ok, "{e}");
}

/// Issue 22, class 4: inputs are decoded strictly or refused: a PNG whose compressed data fails
/// its Adler-32 (its chunk CRCs recomputed), a truncated JPEG, a .npy header with a duplicated
/// key (numpy reads the last, a lenient reader the first), labels outside the model's classes.
/// Nothing is written.
#[test]
fn damaged_images_arrays_and_labels_are_refused() {
    let j = job();
    let (images, _) = fashion(2);
    let refused = |input: &Path, extra: &[&str], want: &[&str]| {
        let e = refused_encrypt(&j, input, extra);
        for w in want {
            assert!(e.contains(w), "`{w}` not in: {e}");
        }
    };
    let img = image::GrayImage::from_raw(28, 28, images[0].clone()).unwrap();
    // PNG: one byte of the zlib stream changed, every chunk CRC recomputed.
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
    let len = u32::from_be_bytes(png[idat - 4..idat].try_into().unwrap()) as usize;
    png[idat + 4 + len - 3] ^= 0x01; // in the Adler-32 trailer of the zlib stream
    let crc = crc32fast::hash(&png[idat..idat + 4 + len]);
    png[idat + 4 + len..idat + 8 + len].copy_from_slice(&crc.to_be_bytes());
    let dir = j.path("bad-png");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.png"), &png).unwrap();
    refused(&dir, &[], &["x.png", "damaged or truncated PNG"]);
    // JPEG: cut short anywhere in its scan.
    let mut jpg = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut jpg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    let dir = j.path("bad-jpg");
    std::fs::create_dir_all(&dir).unwrap();
    for cut in [jpg.len() - 2, jpg.len() - 40, jpg.len() / 2] {
        std::fs::write(dir.join("x.jpg"), &jpg[..cut]).unwrap();
        refused(&dir, &[], &["x.jpg", "damaged or truncated JPEG"]);
    }
    // .npy: 'descr' twice (numpy would read float32 data as the last one says).
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 28, 28), 'descr': '|u1', }";
    let mut h = header.as_bytes().to_vec();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(h.len() as u16).to_le_bytes());
    npy.extend_from_slice(&h);
    npy.extend_from_slice(&images[0]);
    std::fs::write(j.path("dup.npy"), &npy).unwrap();
    refused(&j.path("dup.npy"), &[], &["dup.npy", "\"descr\" twice"]);
    // Labels outside the model's 10 classes.
    let x = ndarray::ArrayD::from_shape_vec(vec![2, 28, 28], images.concat()).unwrap();
    write_npy(&j.path("x.npy"), &x);
    write_npy(
        &j.path("y.npy"),
        &ndarray::ArrayD::from_shape_vec(vec![2], vec![3i64, 12]).unwrap(),
    );
    refused(
        &j.path("x.npy"),
        &["--labels", &j.p("y.npy")],
        &["y.npy", "label 12 (image 1) is not a class", "10"],
    );
}

/// Issue 22, class 5: `decrypt --dataset` on a job of the user's own images is refused (their
/// labels are not the test split's); on a test-split job it agrees with the record.
#[test]
fn accuracy_is_never_taken_against_another_images_labels() {
    let j = job();
    let (images, _) = fashion(3);
    let dir = j.path("own");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, p) in images.iter().enumerate() {
        image::GrayImage::from_raw(28, 28, p.clone())
            .unwrap()
            .save(dir.join(format!("{i}.png")))
            .unwrap();
    }
    let (ok, _, e) = cryptodl(&[
        "encrypt",
        "--model",
        &j.p("m.safetensors"),
        "--keys",
        &j.p("a"),
        "--input",
        dir.to_str().unwrap(),
        "--out",
        &j.p("enc-own"),
        "--insecure",
    ]);
    assert!(ok, "{e}");
    let (ok, _, e) = j.score("m.safetensors", "a", "enc-own", "scored-own");
    assert!(ok, "{e}");
    let decrypt = |scored: &str, extra: &[&str]| {
        let (keys, input) = (j.p("a"), j.p(scored));
        let mut args = vec![
            "decrypt",
            "--keys",
            &keys,
            "--in",
            &input,
            "--insecure",
            "--json",
        ];
        args.extend(extra);
        cryptodl(&args)
    };
    let (ok, _, e) = decrypt("scored-own", &["--dataset", "fashion-mnist"]);
    assert!(
        !ok && e.contains("encrypted your own images") && e.contains("--labels"),
        "{e}"
    );
    let (ok, out, e) = decrypt("scored-own", &[]);
    assert!(ok, "{e}");
    assert!(json(&out).get("accuracy").is_none(), "{out}");
    // The test-split job of `job()`: --dataset agrees with its record.
    let (ok, out, e) = decrypt("scored", &["--dataset", "fashion-mnist"]);
    assert!(ok, "{e}");
    assert!(json(&out)["accuracy"].as_f64().is_some());
    let (ok, _, e) = decrypt(
        "scored",
        &["--dataset", "mnist", "--data-dir", dir.to_str().unwrap()],
    );
    assert!(
        !ok && e.contains("encrypted the fashion-mnist test split"),
        "{e}"
    );
}

/// Found from outside: image names that are not UTF-8 stay distinct (`\xNN` for their bytes),
/// and backslashes `\\`, so every prediction can be told apart in the CSV.
#[test]
fn file_names_that_are_not_utf8_stay_distinct() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let (images, _) = fashion(2);
    for (name, p) in [
        (&b"\xfe\xff.png"[..], &images[0]),
        (&b"\xff\xfe.png"[..], &images[1]),
        // A name that spells the escape of the first one: kept apart by escaping backslashes.
        (&b"\\xfe\\xff.png"[..], &images[0]),
    ] {
        image::GrayImage::from_raw(28, 28, p.clone())
            .unwrap()
            .save(dir.path().join(std::ffi::OsStr::from_bytes(name)))
            .unwrap();
    }
    let imgs = cryptodl::nn::images::load(
        dir.path(),
        [1, 28, 28],
        cryptodl::nn::images::Resize::Refuse,
        None,
    )
    .unwrap();
    let mut names = imgs.names.clone();
    names.sort();
    assert_eq!(
        names,
        vec!["\\\\xfe\\\\xff.png", "\\xfe\\xff.png", "\\xff\\xfe.png"]
    );
}

/// Found from outside: every image is checked against the modulus before anything is written,
/// not the first 256 only (one beyond them was scored, and decrypt then blamed the keys).
#[test]
fn one_overflowing_image_anywhere_is_refused_before_encryption() {
    let j = job();
    // Mean 0: a black image normalises to 0; a white one, through weights 10^4 times the
    // usual, overflows the toy preset after the square.
    let mut m = common::job::model(1, 1e-4);
    m.normalization.mean = vec![0.0];
    if let cryptodl::nn::model::Layer::Dense { weight, .. } = &mut m.layers[1] {
        *weight *= 1e4;
    }
    m.save(&j.path("wide.safetensors")).unwrap();
    let mut x = vec![0u8; 300 * 784];
    x[299 * 784..].fill(255);
    write_npy(
        &j.path("x.npy"),
        &ndarray::ArrayD::from_shape_vec(vec![300, 28, 28], x).unwrap(),
    );
    let out = j.path("never");
    let (ok, _, e) = cryptodl(&[
        "encrypt",
        "--model",
        &j.p("wide.safetensors"),
        "--keys",
        &j.p("a"),
        "--input",
        &j.p("x.npy"),
        "--out",
        out.to_str().unwrap(),
        "--insecure",
    ]);
    assert!(
        !ok && e.contains("on input 299") && e.contains("values reach"),
        "{e}"
    );
    assert!(!out.exists());
}

/// Found from outside: colour images become grey as PIL and torchvision make them (ITU-R
/// 601-2: pure red is 76, not 54); images of other formats in a directory are refused, other
/// files listed as ignored.
#[test]
fn colour_to_grey_and_other_files_in_an_image_directory() {
    let dir = tempfile::tempdir().unwrap();
    image::RgbImage::from_pixel(28, 28, image::Rgb([255, 0, 0]))
        .save(dir.path().join("red.png"))
        .unwrap();
    image::RgbaImage::from_pixel(28, 28, image::Rgba([0, 0, 255, 10]))
        .save(dir.path().join("blue.png"))
        .unwrap();
    std::fs::write(dir.path().join("README.txt"), "notes").unwrap();
    let load = |d: &Path| {
        cryptodl::nn::images::load(d, [1, 28, 28], cryptodl::nn::images::Resize::Refuse, None)
    };
    let imgs = load(dir.path()).unwrap();
    let mut unit = common::job::model(1, 1.0);
    unit.normalization.mean = vec![0.0];
    // Sorted by name: blue, then red.
    assert_eq!(imgs.normalized(&unit, 0)[0], 29.0 / 255.0);
    assert_eq!(imgs.normalized(&unit, 1)[0], 76.0 / 255.0);
    assert_eq!(imgs.ignored, vec!["README.txt"]);
    std::fs::write(dir.path().join("scan.bmp"), "BM").unwrap();
    let e = load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("scan.bmp") && e.contains("a .bmp image"), "{e}");
}
