//! PNG and JPEG files decoded whole or refused: a PNG's chunk CRCs and its zlib stream's Adler-32
//! are verified and it must reach its end (`IEND`); a JPEG is decoded in strict mode (a scan
//! that runs out of data is an error, not grey blocks) and must end with its end-of-image
//! marker. Lenient decoders (browsers, the `image` crate's defaults) fill in what is missing;
//! an encrypted prediction of a half-decoded image would be a silent wrong result.

use std::path::Path;

use image::DynamicImage;

use super::{bad, ImagesError};

/// The most pixels an image may have (2^26, 8192 x 8192), checked from its header before its
/// pixels are allocated.
pub const MAX_PIXELS: u64 = 1 << 26;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Decodes a PNG or JPEG file strictly (see the module's documentation).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<DynamicImage, ImagesError> {
    if bytes.starts_with(PNG_MAGIC) {
        png(path, bytes)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg(path, bytes)
    } else {
        Err(bad(
            path,
            "not a readable PNG / JPEG image (its first bytes are neither signature)",
        ))
    }
}

fn too_large(path: &Path, w: u64, h: u64) -> Result<(), ImagesError> {
    if w == 0 || h == 0 || w * h > MAX_PIXELS {
        return Err(bad(
            path,
            format!("a {w} x {h} image: images have 1 to {MAX_PIXELS} pixels"),
        ));
    }
    Ok(())
}

fn png(path: &Path, bytes: &[u8]) -> Result<DynamicImage, ImagesError> {
    let damaged = |e: ::png::DecodingError| {
        bad(
            path,
            format!("not a readable PNG / JPEG image: a damaged or truncated PNG ({e}); nothing of it is encrypted"),
        )
    };
    let mut decoder = ::png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.ignore_checksums(false);
    decoder.set_transformations(::png::Transformations::EXPAND | ::png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(damaged)?;
    let (w, h) = {
        let info = reader.info();
        (u64::from(info.width), u64::from(info.height))
    };
    too_large(path, w, h)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(path, "a PNG too large to decode"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(damaged)?;
    // Read on to IEND: every later chunk's CRC, and the end of the file, are checked too.
    reader.finish().map_err(damaged)?;
    buf.truncate(frame.buffer_size());
    let (w, h) = (frame.width, frame.height);
    use ::png::ColorType as C;
    let img = match frame.color_type {
        C::Grayscale => image::GrayImage::from_raw(w, h, buf).map(DynamicImage::ImageLuma8),
        C::GrayscaleAlpha => {
            image::GrayAlphaImage::from_raw(w, h, buf).map(DynamicImage::ImageLumaA8)
        }
        C::Rgb => image::RgbImage::from_raw(w, h, buf).map(DynamicImage::ImageRgb8),
        C::Rgba => image::RgbaImage::from_raw(w, h, buf).map(DynamicImage::ImageRgba8),
        C::Indexed => None, // expanded by EXPAND
    };
    img.ok_or_else(|| bad(path, "a PNG whose decoded pixels do not match its size"))
}

fn jpeg(path: &Path, bytes: &[u8]) -> Result<DynamicImage, ImagesError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let damaged = |e: String| {
        bad(
            path,
            format!(
                "not a readable PNG / JPEG image: a damaged or truncated JPEG ({e}); nothing of it is encrypted (re-save it, e.g. as PNG, if it opens elsewhere)"
            ),
        )
    };
    // The end-of-image marker closes the last scan: in entropy-coded data 0xFF is always
    // followed by 0x00 or a restart marker, so FF D9 after the last SOS is the end.
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let eoi_after = last_sos.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]));
    if !eoi_after {
        return Err(damaged("it ends before its end-of-image marker".into()));
    }
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| damaged(format!("{e:?}")))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| damaged("no image size".into()))?;
    too_large(path, w as u64, h as u64)?;
    let out = match decoder.input_colorspace() {
        Some(ColorSpace::Luma | ColorSpace::LumaA) => ColorSpace::Luma,
        _ => ColorSpace::RGB,
    };
    decoder.set_options(decoder.options().jpeg_set_out_colorspace(out));
    let pixels = decoder.decode().map_err(|e| damaged(format!("{e:?}")))?;
    let (w, h) = (w as u32, h as u32);
    let img = match out {
        ColorSpace::Luma => image::GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        _ => image::RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
    };
    img.ok_or_else(|| damaged("its decoded pixels do not match its size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20 x 12 grey gradient, encoded as PNG and as JPEG.
    pub(crate) fn samples() -> (image::GrayImage, Vec<u8>, Vec<u8>) {
        let img = image::GrayImage::from_fn(20, 12, |x, y| image::Luma([(x * 11 + y * 7) as u8]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let mut jpg = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut jpg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        (img, png, jpg)
    }

    /// Recomputes the CRC of every PNG chunk, so that only the zlib stream's Adler-32 (or the
    /// inflater) can tell a change in the compressed data.
    fn fix_crcs(png: &mut [u8]) {
        let mut at = 8;
        while at + 12 <= png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            if at + 12 + len > png.len() {
                break;
            }
            let crc = crc32fast::hash(&png[at + 4..at + 8 + len]);
            png[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
            at += 12 + len;
        }
    }

    #[test]
    fn whole_images_decode_to_their_pixels() {
        let (img, png, jpg) = samples();
        let p = Path::new("x");
        assert_eq!(decode(p, &png).unwrap().to_luma8(), img);
        let j = decode(p, &jpg).unwrap().to_luma8();
        assert_eq!(j.dimensions(), (20, 12));
        // The same pixels as the `image` crate's decoder gives a whole file.
        assert_eq!(j, image::load_from_memory(&jpg).unwrap().to_luma8());
    }

    #[test]
    fn truncated_or_damaged_images_are_refused() {
        let (_, png, jpg) = samples();
        let p = Path::new("x");
        for cut in 0..png.len() {
            assert!(
                decode(p, &png[..cut]).is_err(),
                "PNG cut at {cut} of {}",
                png.len()
            );
        }
        for cut in 0..jpg.len() {
            assert!(
                decode(p, &jpg[..cut]).is_err(),
                "JPEG cut at {cut} of {}",
                jpg.len()
            );
        }
        // Any flipped bit of a PNG is caught: by a chunk's CRC, or (with the CRCs recomputed)
        // by the zlib stream's Adler-32, or else it is no PNG.
        for at in 8..png.len() {
            for fix in [false, true] {
                let mut b = png.clone();
                b[at] ^= 0x10;
                if fix {
                    fix_crcs(&mut b);
                }
                if let Ok(img) = decode(p, &b) {
                    // A change that leaves the image whole (an ancillary field) decodes the
                    // same pixels; never different ones.
                    assert_eq!(
                        img.to_luma8(),
                        decode(p, &png).unwrap().to_luma8(),
                        "byte {at}"
                    );
                }
            }
        }
    }
}
