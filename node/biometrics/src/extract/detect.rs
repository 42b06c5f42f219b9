//! Face detection with YuNet (`face_detection_yunet_2023mar.onnx`), as OpenCV's
//! `FaceDetectorYN::detect` does it.
//!
//! - The image is padded on the right and bottom with black to multiples of 32 and fed as
//!   a `1x3xHxW` float blob of BGR values in 0..=255 (`blobFromImage` with no scale, no mean
//!   and no channel swap).
//! - For each stride (8, 16, 32), each grid cell gives a score `sqrt(cls * obj)` (both clamped
//!   to `[0, 1]`), a box (centre offset and log size, in strides) and five landmarks.
//! - Cells scoring at least the threshold are kept, then OpenCV's `NMSBoxes` runs over the
//!   boxes truncated to integers: scores above the threshold, highest first (ties in order of
//!   appearance), the best `top_k`, each kept unless it overlaps (IoU) a kept one by more than
//!   the NMS threshold.
//!
//! tract plans are made for a concrete input shape, so one is optimised per padded image size
//! and kept in a small cache (every ORL image has the same size: one plan).

use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use super::{BgrImage, ExtractError};

/// One detected face, in the image's pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Face {
    /// Top-left corner, width and height of the box.
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
    /// Right eye, left eye, nose tip, right and left mouth corners (as YuNet names them:
    /// the subject's right eye is on the image's left), each `[x, y]`.
    pub landmarks: [[f32; 2]; 5],
    /// `sqrt(cls * obj)`, in `[0, 1]`.
    pub score: f32,
}

/// YuNet's post-processing parameters; the defaults are the ones the ORL recipe used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    pub score_threshold: f32,
    pub nms_threshold: f32,
    pub top_k: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            score_threshold: 0.5,
            nms_threshold: 0.3,
            top_k: 5000,
        }
    }
}

const STRIDES: [usize; 3] = [8, 16, 32];
const DIVISOR: usize = 32;
/// How many optimised plans (one per padded input size) are kept.
const PLAN_CACHE: usize = 8;

type Plan = Arc<TypedRunnableModel>;

struct CachedPlan {
    /// Padded width and height.
    size: (usize, usize),
    plan: Plan,
    /// The tick it was last used at.
    used: u64,
}

pub(crate) struct Detector {
    model: InferenceModel,
    config: DetectorConfig,
    plans: Mutex<Vec<CachedPlan>>,
    tick: std::sync::atomic::AtomicU64,
}

fn padded(n: usize) -> usize {
    n.div_ceil(DIVISOR) * DIVISOR
}

impl Detector {
    pub(crate) fn new(model: InferenceModel, config: DetectorConfig) -> Self {
        Detector {
            model,
            config,
            plans: Mutex::new(Vec::new()),
            tick: Default::default(),
        }
    }

    /// Checks the model is YuNet-shaped by planning it for one small input.
    pub(crate) fn check(&self) -> TractResult<()> {
        let plan = self.plan(DIVISOR, DIVISOR)?;
        match plan.model().outputs.len() {
            12 => Ok(()),
            n => Err(TractError::msg(format!(
                "YuNet has 12 outputs (cls, obj, bbox, kps for strides 8, 16, 32), this model {n}"
            ))),
        }
    }

    fn plan(&self, width: usize, height: usize) -> TractResult<Plan> {
        let key = (width, height);
        let now = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = plans.iter_mut().find(|c| c.size == key) {
                entry.used = now;
                return Ok(entry.plan.clone());
            }
        }
        // Optimised outside the lock: other sizes are not held up meanwhile.
        let plan = super::model::optimise(self.model.clone(), f32::fact([1, 3, height, width]))?;
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if !plans.iter().any(|c| c.size == key) {
            if plans.len() >= PLAN_CACHE
                && let Some(oldest) = plans
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, c)| c.used)
                    .map(|(i, _)| i)
            {
                plans.swap_remove(oldest);
            }
            plans.push(CachedPlan {
                size: key,
                plan: plan.clone(),
                used: now,
            });
        }
        Ok(plan)
    }

    /// The plan for an image's padded size and its input blob (for profiling).
    pub(crate) fn plan_and_blob(&self, image: &BgrImage) -> TractResult<(Plan, Tensor)> {
        let (pad_w, pad_h) = (padded(image.width()), padded(image.height()));
        Ok((self.plan(pad_w, pad_h)?, blob(image, pad_w, pad_h)))
    }

    /// Every face found, best first (OpenCV's order after NMS).
    pub(crate) fn detect(&self, image: &BgrImage) -> Result<Vec<Face>, ExtractError> {
        let (pad_w, pad_h) = (padded(image.width()), padded(image.height()));
        let plan = self.plan(pad_w, pad_h).map_err(ExtractError::inference)?;
        let blob = blob(image, pad_w, pad_h);
        let outputs = plan
            .run(tvec!(blob.into_tvalue()))
            .map_err(ExtractError::inference)?;
        if outputs.len() != 12 {
            return Err(ExtractError::Inference(format!(
                "YuNet gave {} outputs, not 12",
                outputs.len()
            )));
        }
        let mut faces = Vec::new();
        for (i, &stride) in STRIDES.iter().enumerate() {
            let view = |k: usize, per_cell: usize| -> Result<&[f32], ExtractError> {
                let t = &outputs[i + 3 * k];
                let v = t
                    .try_as_plain_ram()
                    .and_then(|p| p.as_slice::<f32>())
                    .map_err(ExtractError::inference)?;
                let cells = (pad_w / stride) * (pad_h / stride);
                if v.len() != cells * per_cell {
                    return Err(ExtractError::Inference(format!(
                        "YuNet output {} has {} values, not {}",
                        i + 3 * k,
                        v.len(),
                        cells * per_cell
                    )));
                }
                Ok(v)
            };
            let (cls, obj, bbox, kps) = (view(0, 1)?, view(1, 1)?, view(2, 4)?, view(3, 10)?);
            decode_stride(
                stride,
                pad_w / stride,
                pad_h / stride,
                [cls, obj, bbox, kps],
                self.config.score_threshold,
                &mut faces,
            );
        }
        if faces.len() > 1 {
            faces = nms(&faces, &self.config);
        }
        Ok(faces)
    }
}

/// The image, padded with black to `width x height`, as a `1x3xHxW` blob of BGR planes.
fn blob(image: &BgrImage, width: usize, height: usize) -> Tensor {
    let plane = width * height;
    let mut values = vec![0f32; 3 * plane];
    let (w, src) = (image.width(), image.data());
    for y in 0..image.height() {
        let row = &src[3 * w * y..3 * w * (y + 1)];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let at = y * width + x;
            values[at] = f32::from(px[0]);
            values[plane + at] = f32::from(px[1]);
            values[2 * plane + at] = f32::from(px[2]);
        }
    }
    // The shape matches the length by construction.
    Tensor::from_shape(&[1, 3, height, width], &values).expect("blob shape")
}

/// Decodes one stride's grid, as OpenCV's `FaceDetectorYNImpl::postProcess`.
fn decode_stride(
    stride: usize,
    cols: usize,
    rows: usize,
    [cls, obj, bbox, kps]: [&[f32]; 4],
    threshold: f32,
    faces: &mut Vec<Face>,
) {
    let s = stride as f32;
    for r in 0..rows {
        for c in 0..cols {
            let idx = r * cols + c;
            let score = (cls[idx].clamp(0.0, 1.0) * obj[idx].clamp(0.0, 1.0)).sqrt();
            if score.is_nan() || score < threshold {
                continue;
            }
            let (cf, rf) = (c as f32, r as f32);
            let b = &bbox[4 * idx..4 * idx + 4];
            let cx = (cf + b[0]) * s;
            let cy = (rf + b[1]) * s;
            let w = b[2].exp() * s;
            let h = b[3].exp() * s;
            let k = &kps[10 * idx..10 * idx + 10];
            let mut landmarks = [[0f32; 2]; 5];
            for (n, l) in landmarks.iter_mut().enumerate() {
                *l = [(k[2 * n] + cf) * s, (k[2 * n + 1] + rf) * s];
            }
            faces.push(Face {
                x: cx - w / 2.0,
                y: cy - h / 2.0,
                width: w,
                height: h,
                landmarks,
                score,
            });
        }
    }
}

/// OpenCV's `Rect2i(int(x), int(y), int(w), int(h))`: truncation toward zero, saturating.
#[derive(Clone, Copy)]
struct Rect {
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

impl Rect {
    fn of(f: &Face) -> Rect {
        Rect {
            x: f.x as i32 as i64,
            y: f.y as i32 as i64,
            w: f.width as i32 as i64,
            h: f.height as i32 as i64,
        }
    }

    fn area(&self) -> i64 {
        self.w * self.h
    }

    /// `1 - jaccardDistance(a, b)` over OpenCV's `Rect` (`&` is empty when they are apart).
    fn overlap(&self, o: &Rect) -> f32 {
        let (aa, ab) = (self.area(), o.area());
        if aa + ab <= 0 {
            return 1.0;
        }
        let x1 = self.x.max(o.x);
        let y1 = self.y.max(o.y);
        let x2 = (self.x + self.w).min(o.x + o.w);
        let y2 = (self.y + self.h).min(o.y + o.h);
        let inter = if x2 > x1 && y2 > y1 {
            (x2 - x1) * (y2 - y1)
        } else {
            0
        };
        let distance = 1.0 - inter as f64 / (aa + ab - inter) as f64;
        1.0 - distance as f32
    }
}

/// OpenCV's `dnn::NMSBoxes` (eta 1) over integer boxes, returning the kept faces best first.
fn nms(faces: &[Face], config: &DetectorConfig) -> Vec<Face> {
    let mut order: Vec<usize> = (0..faces.len())
        .filter(|&i| faces[i].score > config.score_threshold)
        .collect();
    // Stable: equal scores keep their order of appearance, as OpenCV's stable_sort.
    order.sort_by(|&a, &b| faces[b].score.total_cmp(&faces[a].score));
    order.truncate(config.top_k);
    let rects: Vec<Rect> = faces.iter().map(Rect::of).collect();
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept
            .iter()
            .all(|&k| rects[i].overlap(&rects[k]) <= config.nms_threshold)
        {
            kept.push(i);
        }
    }
    kept.into_iter().map(|i| faces[i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, size: f32, score: f32) -> Face {
        Face {
            x,
            y,
            width: size,
            height: size,
            landmarks: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn padding_is_to_multiples_of_32() {
        assert_eq!(padded(264), 288);
        assert_eq!(padded(304), 320);
        assert_eq!(padded(320), 320);
        assert_eq!(padded(1), 32);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let config = DetectorConfig::default();
        let faces = [
            face(10.0, 10.0, 100.0, 0.7),
            face(12.0, 11.0, 100.0, 0.9), // overlaps the first: it wins
            face(300.0, 300.0, 50.0, 0.8),
            face(301.0, 300.0, 50.0, 0.8), // ties the one before, which appeared first
            face(500.0, 500.0, 50.0, 0.5), // not above the threshold
        ];
        let kept = nms(&faces, &config);
        assert_eq!(kept, vec![faces[1], faces[2]]);
        let one = DetectorConfig { top_k: 1, ..config };
        assert_eq!(nms(&faces, &one), vec![faces[1]]);
    }

    #[test]
    fn decoding_a_cell() {
        // One 2x1 grid at stride 8; only cell (r 0, c 1) scores.
        let cls = [0.1, 0.81];
        let obj = [0.1, 1.5]; // clamped to 1
        let mut bbox = [0f32; 8];
        bbox[4..].copy_from_slice(&[0.5, 0.25, 0.0, (2f32).ln()]);
        let mut kps = [0f32; 20];
        kps[10] = 0.5;
        kps[11] = -0.5;
        let mut faces = Vec::new();
        decode_stride(8, 2, 1, [&cls, &obj, &bbox, &kps], 0.5, &mut faces);
        assert_eq!(faces.len(), 1);
        let f = faces[0];
        assert!((f.score - 0.9).abs() < 1e-6);
        // Centre (12, 2), width 8, height 16.
        assert!((f.x - 8.0).abs() < 1e-5 && (f.y + 6.0).abs() < 1e-5);
        assert!((f.width - 8.0).abs() < 1e-5 && (f.height - 16.0).abs() < 1e-4);
        assert_eq!(f.landmarks[0], [12.0, -4.0]);
        assert_eq!(f.landmarks[1], [8.0, 0.0]);
    }
}
