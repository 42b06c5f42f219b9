//! Image preparation as OpenCV does it, for inputs that must match an OpenCV recipe: the ORL
//! test set (`../shared/data/README.md`) was made by `cv2.resize` (bilinear) to 184x224 and
//! `cv2.copyMakeBorder(BORDER_REPLICATE)` of 40 px before detection. Extraction itself never
//! resizes or pads; callers that follow such a recipe (the tests, the benchmark) use these.

use super::BgrImage;

/// `cv2.resize(INTER_LINEAR)` of an 8-bit image, as OpenCV computes it: half-pixel centres
/// (`src = (dst + 0.5) * scale - 0.5`); 11-bit weights, each rounded on its own; columns
/// clamped with their weight (a column left of the first uses the first alone), rows clamped
/// but weighted as computed; the exact horizontal pass, then OpenCV's SIMD vertical pass,
/// which drops low bits before rounding. Byte-identical to opencv-python-headless 5.0.0
/// (x86-64) on all 400 ORL images of the recipe.
pub fn resize_bilinear(image: &BgrImage, width: usize, height: usize) -> Option<BgrImage> {
    const ONE: f32 = 2048.0;
    if width == 0 || height == 0 {
        return None;
    }
    let weight = |w: f32| (w * ONE).round_ties_even() as i32;
    // For each output column or row: the first source index (unclamped for rows) and the
    // weights of it and the next.
    let taps = |dst: usize, src: usize, clamp: bool| -> Vec<(i64, i32, i32)> {
        let scale = src as f64 / dst as f64;
        (0..dst)
            .map(|d| {
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let mut s = f.floor() as i64;
                let mut frac = f - s as f32;
                if clamp && s < 0 {
                    (s, frac) = (0, 0.0);
                }
                if clamp && s >= src as i64 - 1 {
                    (s, frac) = (src as i64 - 1, 0.0);
                }
                (s, weight(1.0 - frac), weight(frac))
            })
            .collect()
    };
    let (sw, sh) = (image.width(), image.height());
    let (xs, ys) = (taps(width, sw, true), taps(height, sh, false));
    let src = image.data();
    let clamp = |i: i64, n: usize| i.clamp(0, n as i64 - 1) as usize;
    // Horizontal pass of one source row: values * 2048, exact.
    let horizontal = |y: usize| -> Vec<i32> {
        let row = &src[3 * sw * y..3 * sw * (y + 1)];
        let mut out = Vec::with_capacity(3 * width);
        for &(x, w0, w1) in &xs {
            let (x0, x1) = (clamp(x, sw), clamp(x + 1, sw));
            for c in 0..3 {
                out.push(i32::from(row[3 * x0 + c]) * w0 + i32::from(row[3 * x1 + c]) * w1);
            }
        }
        out
    };
    // OpenCV's `v_mul_hi` of the 16-bit values `h >> 4` and a weight.
    let mul_hi = |h: i32, w: i32| ((h >> 4) * w) >> 16;
    let mut out = Vec::with_capacity(3 * width * height);
    for &(y, w0, w1) in &ys {
        let (r0, r1) = (horizontal(clamp(y, sh)), horizontal(clamp(y + 1, sh)));
        for (&a, &b) in r0.iter().zip(&r1) {
            let v = (mul_hi(a, w0) + mul_hi(b, w1) + 2) >> 2;
            out.push(v.clamp(0, 255) as u8);
        }
    }
    BgrImage::from_bgr(width, height, out)
}

/// `cv2.copyMakeBorder(image, n, n, n, n, BORDER_REPLICATE)`.
pub fn pad_replicate(image: &BgrImage, n: usize) -> Option<BgrImage> {
    let (w, h) = (image.width(), image.height());
    let (pw, ph) = (w.checked_add(2 * n)?, h.checked_add(2 * n)?);
    let mut out = Vec::with_capacity(pw.checked_mul(ph)?.checked_mul(3)?);
    for y in 0..ph {
        let sy = y.saturating_sub(n).min(h - 1);
        for x in 0..pw {
            let sx = x.saturating_sub(n).min(w - 1);
            out.extend_from_slice(&image.pixel(sx, sy));
        }
    }
    BgrImage::from_bgr(pw, ph, out)
}

/// The ORL recipe: 92x112 (any size) resized to 184x224, then 40 px of replicated border.
pub fn orl_recipe(image: &BgrImage) -> Option<BgrImage> {
    pad_replicate(&resize_bilinear(image, 184, 224)?, 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubling_interpolates_at_quarter_pixels() {
        // A 2x1 grey image, values 0 and 160: doubled to 4x2.
        let img = BgrImage::from_gray(2, 1, &[0, 160]).unwrap();
        let big = resize_bilinear(&img, 4, 2).unwrap();
        let row: Vec<u8> = big.data().chunks(3).map(|p| p[0]).take(4).collect();
        // Sources at x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        assert_eq!(row, vec![0, 40, 120, 160]);
        assert_eq!(&big.data()[12..24], big.data()[..12].to_vec().as_slice());
    }

    #[test]
    fn padding_replicates_the_edges() {
        let img = BgrImage::from_gray(2, 2, &[1, 2, 3, 4]).unwrap();
        let p = pad_replicate(&img, 1).unwrap();
        let grey: Vec<u8> = p.data().chunks(3).map(|px| px[0]).collect();
        assert_eq!(grey, vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    }
}
