//! Encoded bytes -> a BGR image, within size limits: what OpenCV's `imread(IMREAD_COLOR)`
//! hands `FaceDetectorYN`. Grey images become three equal channels; alpha is dropped.
//!
//! Only PNG, JPEG and PNM (the ORL test images are PGM) are compiled in. The encoded size and
//! the decoded dimensions are checked before any pixel is decoded, and the decoder is given
//! the same limits, so a small file that claims a huge image is refused cheaply.

use std::io::Cursor;

use image::{DynamicImage, ImageReader};

use super::{ExtractError, Limits};

/// An 8-bit, 3-channel image in OpenCV's layout: rows top to bottom, pixels interleaved
/// blue, green, red.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgrImage {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl BgrImage {
    /// `data` holds `width * height` BGR pixels, row by row.
    pub fn from_bgr(width: usize, height: usize, data: Vec<u8>) -> Option<Self> {
        let len = width.checked_mul(height)?.checked_mul(3)?;
        (width > 0 && height > 0 && data.len() == len).then_some(BgrImage {
            width,
            height,
            data,
        })
    }

    /// A grey image as OpenCV's `cvtColor(GRAY2BGR)` (and `imread` of a grey file) makes it:
    /// the grey value in all three channels.
    pub fn from_gray(width: usize, height: usize, gray: &[u8]) -> Option<Self> {
        if width.checked_mul(height)? != gray.len() {
            return None;
        }
        let data = gray.iter().flat_map(|&g| [g, g, g]).collect();
        Self::from_bgr(width, height, data)
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// BGR bytes, row by row (`3 * width` bytes a row).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The B, G, R values at column `x`, row `y` (both in range).
    #[inline]
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (y * self.width + x);
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// Decodes `bytes` (PNG, JPEG or PNM) into BGR, refusing anything over `limits`.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<BgrImage, ExtractError> {
    if bytes.len() > limits.max_encoded_bytes {
        return Err(ExtractError::EncodedTooLarge {
            bytes: bytes.len(),
            limit: limits.max_encoded_bytes,
        });
    }
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>, ExtractError> {
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ExtractError::Decode(e.to_string()))?;
        if reader.format().is_none() {
            return Err(ExtractError::Decode(
                "not a PNG, JPEG or PNM image".to_string(),
            ));
        }
        Ok(reader)
    };
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| ExtractError::Decode(e.to_string()))?;
    limits.check(width as usize, height as usize)?;

    let mut reader = reader()?;
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(width);
    decoder_limits.max_image_height = Some(height);
    // Room for the decoded image at 16 bits a channel with alpha, and the decoder's buffers.
    decoder_limits.max_alloc = Some(2 * 8 * u64::from(width) * u64::from(height) + (1 << 20));
    reader.limits(decoder_limits);
    let decoded = reader
        .decode()
        .map_err(|e| ExtractError::Decode(e.to_string()))?;
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    limits.check(w, h)?;
    let image = match decoded {
        DynamicImage::ImageLuma8(gray) => BgrImage::from_gray(w, h, gray.as_raw()),
        other => {
            let rgb = other.into_rgb8();
            let data = rgb
                .as_raw()
                .chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect();
            BgrImage::from_bgr(w, h, data)
        }
    };
    image.ok_or_else(|| ExtractError::Decode("decoded image has no pixels".to_string()))
}
