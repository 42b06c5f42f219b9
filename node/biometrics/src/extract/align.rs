//! Face alignment as OpenCV's `FaceRecognizerSF::alignCrop`: the similarity transform (scale,
//! rotation, translation; least squares, Umeyama) taking the five detected landmarks to
//! SFace's reference points, then `warpAffine` to 112x112, bilinear, black outside the image.
//!
//! The arithmetic follows OpenCV's: landmark means and deviations in `f32`, the covariance in
//! `f64`, the inverse map in `f64` rounded to `f32`, sampling in `f32` (the `warpAffine`
//! kernels of OpenCV 5), each value rounded half to even. Checked against opencv-python-headless
//! 5.0.0 on the 400 ORL images: 876 of the crops' 15 million bytes differ, each by one (the
//! landmarks themselves differ in their last bits between tract and OpenCV's DNN).

use super::{BgrImage, Face};

/// Side of SFace's input.
pub const CROP: usize = 112;

/// SFace's reference landmarks in the 112x112 crop (right eye, left eye, nose tip, right and
/// left mouth corners), and the mean OpenCV uses for them.
const REFERENCE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];
const REFERENCE_MEAN: [f32; 2] = [56.0262, 71.9008];

/// The 2x3 matrix taking image points to crop points, or `None` when the landmarks are
/// degenerate (all at one point).
pub fn similarity_transform(landmarks: &[[f32; 2]; 5]) -> Option<[[f64; 3]; 2]> {
    let mean = |axis: usize| landmarks.iter().fold(0f32, |sum, l| sum + l[axis]) / 5.0;
    let src_mean = [mean(0), mean(1)];
    let mut src = [[0f32; 2]; 5];
    let mut dst = [[0f32; 2]; 5];
    for i in 0..5 {
        for axis in 0..2 {
            src[i][axis] = landmarks[i][axis] - src_mean[axis];
            dst[i][axis] = REFERENCE[i][axis] - REFERENCE_MEAN[axis];
        }
    }
    // Covariance A[r][c] = mean of dst[r] * src[c]; each product in f32, summed in f64.
    let cov = |r: usize, c: usize| {
        (0..5)
            .map(|i| f64::from(dst[i][r] * src[i][c]))
            .sum::<f64>()
            / 5.0
    };
    let (a00, a01, a10, a11) = (cov(0, 0), cov(0, 1), cov(1, 0), cov(1, 1));
    // For a 2x2 covariance, Umeyama's rotation U·D·Vᵀ (D flipping the last axis when the
    // determinant is negative) is the rotation by atan2(a10 - a01, a00 + a11), and the
    // trace of D·S, the sum of the singular values signed by D, is the length of that vector.
    let (cos, sin) = (a00 + a11, a10 - a01);
    let norm = cos.hypot(sin);
    let var: f64 = (0..2)
        .map(|axis| {
            src.iter()
                .map(|p| f64::from(p[axis]) * f64::from(p[axis]))
                .sum::<f64>()
                / 5.0
        })
        .sum();
    if !(norm > 0.0 && var > 0.0 && norm.is_finite() && var.is_finite()) {
        return None;
    }
    let (r00, r01, r10, r11) = (cos / norm, -sin / norm, sin / norm, cos / norm);
    let scale = norm / var;
    let (mx, my) = (f64::from(src_mean[0]), f64::from(src_mean[1]));
    let tx = f64::from(REFERENCE_MEAN[0]) - scale * (r00 * mx + r01 * my);
    let ty = f64::from(REFERENCE_MEAN[1]) - scale * (r10 * mx + r11 * my);
    Some([
        [scale * r00, scale * r01, tx],
        [scale * r10, scale * r11, ty],
    ])
}

/// OpenCV's `invertAffineTransform`.
fn invert(m: &[[f64; 3]; 2]) -> [f32; 6] {
    let d = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a22) = (m[1][1] * d, m[0][0] * d);
    let (a12, a21) = (-m[0][1] * d, -m[1][0] * d);
    let b1 = -a11 * m[0][2] - a12 * m[1][2];
    let b2 = -a21 * m[0][2] - a22 * m[1][2];
    [a11, a12, b1, a21, a22, b2].map(|v| v as f32)
}

/// The 112x112 BGR crop SFace embeds, or `None` for degenerate landmarks.
pub fn align(image: &BgrImage, face: &Face) -> Option<BgrImage> {
    let forward = similarity_transform(&face.landmarks)?;
    let m = invert(&forward);
    let (cols, rows) = (image.width(), image.height());
    let src = image.data();
    // A pixel, black outside the image.
    let fetch = |x: i64, y: i64| -> [f32; 3] {
        if x >= 0 && (x as usize) < cols && y >= 0 && (y as usize) < rows {
            let i = 3 * (y as usize * cols + x as usize);
            [src[i], src[i + 1], src[i + 2]].map(f32::from)
        } else {
            [0.0; 3]
        }
    };
    let (colsf, rowsf) = (cols as f32, rows as f32);
    let mut out = vec![0u8; CROP * CROP * 3];
    for (y, line) in out.chunks_exact_mut(3 * CROP).enumerate() {
        let yf = y as f32;
        for (x, px) in line.chunks_exact_mut(3).enumerate() {
            let xf = x as f32;
            let sx = xf * m[0] + yf * m[1] + m[2];
            let sy = xf * m[3] + yf * m[4] + m[5];
            // Wholly outside (no neighbour in the image, or not a number): the border value,
            // black. Inside, the floors are below 2^31 in magnitude.
            if !(sx >= -1.0 && sx < colsf && sy >= -1.0 && sy < rowsf) {
                continue;
            }
            let (fx, fy) = (floor(sx), floor(sy));
            let (ix, iy) = (fx as i64, fy as i64);
            let (ax, ay) = (sx - fx, sy - fy);
            let [p00, p01, p10, p11] =
                if ix >= 0 && iy >= 0 && (ix as usize) + 1 < cols && (iy as usize) + 1 < rows {
                    // All four neighbours inside: read them straight.
                    let i = 3 * (iy as usize * cols + ix as usize);
                    let j = i + 3 * cols;
                    let at = |k: usize| [src[k], src[k + 1], src[k + 2]].map(f32::from);
                    [at(i), at(i + 3), at(j), at(j + 3)]
                } else {
                    [
                        fetch(ix, iy),
                        fetch(ix + 1, iy),
                        fetch(ix, iy + 1),
                        fetch(ix + 1, iy + 1),
                    ]
                };
            for ch in 0..3 {
                let v0 = p00[ch] + ax * (p01[ch] - p00[ch]);
                let v1 = p10[ch] + ax * (p11[ch] - p10[ch]);
                let v = v0 + ay * (v1 - v0);
                px[ch] = round_ties_even(v).clamp(0.0, 255.0) as u8;
            }
        }
    }
    BgrImage::from_bgr(CROP, CROP, out)
}

/// `v.floor()` for `|v| < 2^31`, without the library call `f32::floor` is on baseline x86-64
/// (no SSE4.1 rounding instruction).
fn floor(v: f32) -> f32 {
    let t = v as i32 as f32;
    if t > v { t - 1.0 } else { t }
}

/// `v.round_ties_even()` for `0 <= v < 2^23`, and some value at most 0 for negative `v` (the
/// caller clamps to 0), without a library call: adding 2^23 leaves no fraction bits, so the
/// addition itself rounds, to nearest even.
fn round_ties_even(v: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    (v + TWO_23) - TWO_23
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_points_map_to_themselves() {
        let m = similarity_transform(&REFERENCE).unwrap();
        assert!((m[0][0] - 1.0).abs() < 1e-4 && m[0][1].abs() < 1e-4);
        assert!(m[0][2].abs() < 1e-2 && m[1][2].abs() < 1e-2);
    }

    #[test]
    fn a_rotated_scaled_face_is_undone() {
        // The reference points turned by 30°, doubled, moved by (100, 50).
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let moved = REFERENCE.map(|[x, y]| {
            let (x, y) = (f64::from(x), f64::from(y));
            [
                (2.0 * (c * x - s * y) + 100.0) as f32,
                (2.0 * (s * x + c * y) + 50.0) as f32,
            ]
        });
        let m = similarity_transform(&moved).unwrap();
        for (p, r) in moved.iter().zip(REFERENCE) {
            let x = m[0][0] * f64::from(p[0]) + m[0][1] * f64::from(p[1]) + m[0][2];
            let y = m[1][0] * f64::from(p[0]) + m[1][1] * f64::from(p[1]) + m[1][2];
            // The reference mean OpenCV uses is rounded: within a thousandth of a pixel.
            assert!((x - f64::from(r[0])).abs() < 1e-3, "{x} vs {}", r[0]);
            assert!((y - f64::from(r[1])).abs() < 1e-3, "{y} vs {}", r[1]);
        }
    }

    /// The warp as first written: `f32::floor`, `round_ties_even` and a bounds-checked fetch
    /// for every neighbour.
    fn align_reference(image: &BgrImage, face: &Face) -> Option<BgrImage> {
        let m = invert(&similarity_transform(&face.landmarks)?);
        let (cols, rows) = (image.width() as i64, image.height() as i64);
        let src = image.data();
        let fetch = |x: i64, y: i64| -> [f32; 3] {
            if x >= 0 && x < cols && y >= 0 && y < rows {
                let i = 3 * (y * cols + x) as usize;
                [src[i], src[i + 1], src[i + 2]].map(f32::from)
            } else {
                [0.0; 3]
            }
        };
        let mut out = vec![0u8; CROP * CROP * 3];
        for y in 0..CROP {
            for x in 0..CROP {
                let (xf, yf) = (x as f32, y as f32);
                let sx = xf * m[0] + yf * m[1] + m[2];
                let sy = xf * m[3] + yf * m[4] + m[5];
                if !(sx.is_finite() && sy.is_finite()) {
                    continue;
                }
                let (fx, fy) = (sx.floor(), sy.floor());
                let (ix, iy) = (fx as i64, fy as i64);
                let (ax, ay) = (sx - fx, sy - fy);
                if ix < -1 || ix >= cols || iy < -1 || iy >= rows {
                    continue;
                }
                let (p00, p01) = (fetch(ix, iy), fetch(ix + 1, iy));
                let (p10, p11) = (fetch(ix, iy + 1), fetch(ix + 1, iy + 1));
                let at = 3 * (y * CROP + x);
                for ch in 0..3 {
                    let v0 = p00[ch] + ax * (p01[ch] - p00[ch]);
                    let v1 = p10[ch] + ax * (p11[ch] - p10[ch]);
                    let v = v0 + ay * (v1 - v0);
                    out[at + ch] = v.round_ties_even().clamp(0.0, 255.0) as u8;
                }
            }
        }
        BgrImage::from_bgr(CROP, CROP, out)
    }

    #[test]
    fn the_fast_warp_gives_the_reference_bytes() {
        // A 97x83 image of varied values, faces placed inside, across the edges, turned and
        // scaled, so that crops read inside, across the border and wholly outside.
        let (w, h) = (97, 83);
        let data: Vec<u8> = (0..w * h * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let image = BgrImage::from_bgr(w, h, data).unwrap();
        let mut checked = 0;
        for (dx, dy, scale, angle) in [
            (20.0, 10.0, 0.5, 0.0),
            (-30.0, -20.0, 0.8, 15.0),
            (60.0, 40.0, 1.3, -40.0),
            (0.3, 0.7, 0.25, 90.0),
            (-90.0, 5.0, 2.0, 200.0),
            (10.5, 20.25, 0.61, 3.3),
        ] {
            let (c, s) = (f32::to_radians(angle).cos(), f32::to_radians(angle).sin());
            let landmarks = REFERENCE
                .map(|[x, y]| [scale * (c * x - s * y) + dx, scale * (s * x + c * y) + dy]);
            let face = Face {
                x: 0.0,
                y: 0.0,
                width: 1.0,
                height: 1.0,
                landmarks,
                score: 1.0,
            };
            let (ours, reference) = (
                align(&image, &face).unwrap(),
                align_reference(&image, &face).unwrap(),
            );
            assert_eq!(ours.data(), reference.data(), "{dx} {dy} {scale} {angle}");
            checked += ours.data().iter().filter(|&&b| b != 0).count();
        }
        assert!(checked > 10_000, "the crops read the image");
    }

    #[test]
    fn degenerate_landmarks_give_no_crop() {
        assert!(similarity_transform(&[[5.0, 5.0]; 5]).is_none());
    }
}
