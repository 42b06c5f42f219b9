//! Strict parser for ISO/IEC 19794-2:2005 finger minutiae records (`FMR\0`, version ` 20\0`).
//!
//! Layout (all integers big-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | format identifier `FMR\0` |
//! | 4 | version ` 20\0` |
//! | 4 | record length, the whole record in bytes |
//! | 2 | capture equipment: 4 bits compliance, 12 bits device type id |
//! | 2 + 2 | image width, height (pixels) |
//! | 2 + 2 | horizontal, vertical resolution (pixels per centimetre) |
//! | 1 | number of finger views |
//! | 1 | reserved, must be 0 |
//!
//! then for each finger view: finger position (1), view number (4 bits) and impression type
//! (4 bits), finger quality (1), number of minutiae (1), the minutiae (6 bytes each: type in
//! 2 bits + x in 14 bits; 2 reserved bits + y in 14 bits; angle; quality), and an extended
//! data block (2-byte length, then areas of 2-byte type, 2-byte length including that
//! 4-byte header, and data).
//!
//! Every field is checked and a record with anything left over, missing or out of range is
//! rejected with a [`RecordError`] naming the field and the offending value. The parser never
//! panics, whatever the bytes (tested with random, truncated and mutated records).
//!
//! # Angle convention
//!
//! The standard stores the minutia direction in units of 360/256 degrees, counter-clockwise
//! from the horizontal axis pointing right, with the y axis pointing **up**; image rows grow
//! **down**, so readers disagree on the sign. [`AngleConvention`] picks the reading.
//! Measured on the FVC2002 B sets (SecuGen extractor; see `examples/fvc_eval.rs`, which
//! prints both): reading the byte as counter-clockwise with y up
//! ([`AngleConvention::CounterClockwise`], the standard's own wording) gives the lower EER
//! on every database, so it is the default.

use std::f32::consts::PI;

use thiserror::Error;

/// The 4-byte format identifier that opens every record.
pub const FORMAT_ID: [u8; 4] = *b"FMR\0";
/// The 4-byte version of ISO/IEC 19794-2:2005.
pub const VERSION_2005: [u8; 4] = *b" 20\0";

const RECORD_HEADER_LEN: usize = 24;
const VIEW_HEADER_LEN: usize = 4;
const MINUTIA_LEN: usize = 6;
const MAX_COORDINATE: u16 = 0x3fff;

/// Why a byte string is not a valid ISO/IEC 19794-2:2005 minutiae record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("record is {len} bytes; too short to hold the {needed}-byte {what}")]
    Truncated {
        what: &'static str,
        needed: usize,
        len: usize,
    },
    #[error("format identifier is {found:02x?}, expected \"FMR\\0\"")]
    BadFormatId { found: [u8; 4] },
    #[error("version is {found:02x?}, expected \" 20\\0\" (ISO/IEC 19794-2:2005)")]
    BadVersion { found: [u8; 4] },
    #[error("record length field says {declared} bytes but the record has {actual}")]
    LengthMismatch { declared: u64, actual: usize },
    #[error("image {axis} size is 0 pixels")]
    ZeroImageSize { axis: &'static str },
    #[error("image {axis} resolution is 0 pixels per centimetre")]
    ZeroResolution { axis: &'static str },
    #[error("record declares no finger view")]
    NoFingerViews,
    #[error("reserved header byte is {value:#04x}, must be 0")]
    ReservedHeaderByte { value: u8 },
    #[error("finger view {view}: finger position {value} is not a code of 0..=10")]
    BadFingerPosition { view: usize, value: u8 },
    #[error("finger view {view}: impression type {value} is not 0, 1, 2, 3 or 8")]
    BadImpressionType { view: usize, value: u8 },
    #[error("finger view {view}: finger quality {value} is above 100")]
    BadFingerQuality { view: usize, value: u8 },
    #[error("finger view {view}: finger position {position} view number {number} appears twice")]
    DuplicateView {
        view: usize,
        position: u8,
        number: u8,
    },
    #[error("finger view {view}, minutia {index}: type bits are 11, a reserved value")]
    BadMinutiaType { view: usize, index: usize },
    #[error("finger view {view}, minutia {index}: reserved bits above y are {value:#b}, must be 0")]
    ReservedMinutiaBits {
        view: usize,
        index: usize,
        value: u8,
    },
    #[error(
        "finger view {view}, minutia {index}: position ({x}, {y}) is outside the {width}x{height} image"
    )]
    MinutiaOutsideImage {
        view: usize,
        index: usize,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    },
    #[error("finger view {view}, minutia {index}: quality {value} is above 100")]
    BadMinutiaQuality {
        view: usize,
        index: usize,
        value: u8,
    },
    #[error(
        "finger view {view}: extended data area at offset {offset} declares length {length}, \
         which is below its 4-byte header or runs past the block's {remaining} remaining bytes"
    )]
    BadExtendedArea {
        view: usize,
        offset: usize,
        length: u16,
        remaining: usize,
    },
    #[error("finger view {view}: extended data area type 0x0000 is reserved")]
    ReservedExtendedType { view: usize },
    #[error("{extra} bytes follow the last finger view")]
    TrailingBytes { extra: usize },
}

/// Minutia type from the record's two type bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MinutiaKind {
    Other,
    RidgeEnding,
    Bifurcation,
}

/// How to read the angle byte; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AngleConvention {
    /// Counter-clockwise with the y axis up (the standard's wording): in image coordinates
    /// (rows down) the direction is `(cos a, -sin a)`. Measured best on FVC2002 / SecuGen.
    #[default]
    CounterClockwise,
    /// Clockwise in image coordinates: direction `(cos a, sin a)` with rows down.
    Clockwise,
}

/// One minutia as stored: raw coordinates in pixels and the raw angle byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Minutia {
    pub kind: MinutiaKind,
    pub x: u16,
    pub y: u16,
    /// Direction in units of 360/256 degrees; see [`AngleConvention`].
    pub angle: u8,
    /// 0..=100.
    pub quality: u8,
}

impl Minutia {
    /// Direction in radians in image coordinates (x right, y down), in `[0, 2π)`, so the
    /// minutia points along `(cos, sin)` of the result in pixel space.
    pub fn direction(&self, convention: AngleConvention) -> f32 {
        let a = f32::from(self.angle) * (2.0 * PI / 256.0);
        match convention {
            AngleConvention::Clockwise => a,
            AngleConvention::CounterClockwise => {
                if a == 0.0 {
                    0.0
                } else {
                    2.0 * PI - a
                }
            }
        }
    }
}

/// One extended data area, kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedArea {
    /// 0x0001 ridge counts, 0x0002 cores and deltas, 0x0003 zonal quality, others vendor.
    pub type_id: u16,
    pub data: Vec<u8>,
}

/// One finger view (one impression of one finger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerView {
    /// 0 unknown, 1..=10 right thumb .. left little (ISO/IEC 19794-2 table of positions).
    pub position: u8,
    pub view_number: u8,
    pub impression_type: u8,
    pub quality: u8,
    pub minutiae: Vec<Minutia>,
    pub extended: Vec<ExtendedArea>,
}

/// A parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerRecord {
    pub compliance: u8,
    pub device_type: u16,
    pub width: u16,
    pub height: u16,
    /// Pixels per centimetre (197 ≈ 500 dpi).
    pub resolution_x: u16,
    pub resolution_y: u16,
    pub views: Vec<FingerView>,
}

/// Reads the big-endian fields in order, reporting truncation by name.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(RecordError::Truncated {
                what,
                needed: n,
                len: self.bytes.len(),
            }),
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, RecordError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, RecordError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn array4(&mut self, what: &'static str) -> Result<[u8; 4], RecordError> {
        let b = self.take(4, what)?;
        Ok([b[0], b[1], b[2], b[3]])
    }
}

impl FingerRecord {
    /// Parses and validates one whole record; `bytes` must be exactly the record.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader { bytes, pos: 0 };
        if bytes.len() < RECORD_HEADER_LEN {
            // Still name the first wrong field when the prefix is readable.
            if bytes.len() >= 4 && bytes[..4] != FORMAT_ID {
                return Err(RecordError::BadFormatId {
                    found: [bytes[0], bytes[1], bytes[2], bytes[3]],
                });
            }
            return Err(RecordError::Truncated {
                what: "record header",
                needed: RECORD_HEADER_LEN,
                len: bytes.len(),
            });
        }
        let format = r.array4("format identifier")?;
        if format != FORMAT_ID {
            return Err(RecordError::BadFormatId { found: format });
        }
        let version = r.array4("version")?;
        if version != VERSION_2005 {
            return Err(RecordError::BadVersion { found: version });
        }
        let declared = r.u32("record length")?;
        if u64::from(declared) != bytes.len() as u64 {
            return Err(RecordError::LengthMismatch {
                declared: u64::from(declared),
                actual: bytes.len(),
            });
        }
        let equipment = r.u16("capture equipment")?;
        let width = r.u16("image width")?;
        let height = r.u16("image height")?;
        let resolution_x = r.u16("horizontal resolution")?;
        let resolution_y = r.u16("vertical resolution")?;
        let view_count = r.u8("number of finger views")?;
        let reserved = r.u8("reserved byte")?;
        if width == 0 {
            return Err(RecordError::ZeroImageSize { axis: "x" });
        }
        if height == 0 {
            return Err(RecordError::ZeroImageSize { axis: "y" });
        }
        if resolution_x == 0 {
            return Err(RecordError::ZeroResolution { axis: "x" });
        }
        if resolution_y == 0 {
            return Err(RecordError::ZeroResolution { axis: "y" });
        }
        if view_count == 0 {
            return Err(RecordError::NoFingerViews);
        }
        if reserved != 0 {
            return Err(RecordError::ReservedHeaderByte { value: reserved });
        }
        let mut views: Vec<FingerView> = Vec::with_capacity(usize::from(view_count));
        for view in 0..usize::from(view_count) {
            let parsed = parse_view(&mut r, view, width, height)?;
            if views
                .iter()
                .any(|v| v.position == parsed.position && v.view_number == parsed.view_number)
            {
                return Err(RecordError::DuplicateView {
                    view,
                    position: parsed.position,
                    number: parsed.view_number,
                });
            }
            views.push(parsed);
        }
        if r.pos != bytes.len() {
            return Err(RecordError::TrailingBytes {
                extra: bytes.len() - r.pos,
            });
        }
        Ok(FingerRecord {
            compliance: (equipment >> 12) as u8,
            device_type: equipment & 0x0fff,
            width,
            height,
            resolution_x,
            resolution_y,
            views,
        })
    }
}

fn parse_view(
    r: &mut Reader<'_>,
    view: usize,
    width: u16,
    height: u16,
) -> Result<FingerView, RecordError> {
    let header = r.take(VIEW_HEADER_LEN, "finger view header")?;
    let (position, packed, quality, count) = (header[0], header[1], header[2], header[3]);
    if position > 10 {
        return Err(RecordError::BadFingerPosition {
            view,
            value: position,
        });
    }
    let view_number = packed >> 4;
    let impression_type = packed & 0x0f;
    if !matches!(impression_type, 0..=3 | 8) {
        return Err(RecordError::BadImpressionType {
            view,
            value: impression_type,
        });
    }
    if quality > 100 {
        return Err(RecordError::BadFingerQuality {
            view,
            value: quality,
        });
    }
    let raw = r.take(usize::from(count) * MINUTIA_LEN, "minutiae")?;
    let mut minutiae = Vec::with_capacity(usize::from(count));
    for (index, m) in raw.chunks_exact(MINUTIA_LEN).enumerate() {
        let kind = match m[0] >> 6 {
            0 => MinutiaKind::Other,
            1 => MinutiaKind::RidgeEnding,
            2 => MinutiaKind::Bifurcation,
            _ => return Err(RecordError::BadMinutiaType { view, index }),
        };
        let x = u16::from_be_bytes([m[0], m[1]]) & MAX_COORDINATE;
        let reserved = m[2] >> 6;
        if reserved != 0 {
            return Err(RecordError::ReservedMinutiaBits {
                view,
                index,
                value: reserved,
            });
        }
        let y = u16::from_be_bytes([m[2], m[3]]) & MAX_COORDINATE;
        if x >= width || y >= height {
            return Err(RecordError::MinutiaOutsideImage {
                view,
                index,
                x,
                y,
                width,
                height,
            });
        }
        let quality = m[5];
        if quality > 100 {
            return Err(RecordError::BadMinutiaQuality {
                view,
                index,
                value: quality,
            });
        }
        minutiae.push(Minutia {
            kind,
            x,
            y,
            angle: m[4],
            quality,
        });
    }
    let block_len = usize::from(r.u16("extended data block length")?);
    let block = r.take(block_len, "extended data block")?;
    let mut extended = Vec::new();
    let mut offset = 0;
    while offset < block.len() {
        let remaining = block.len() - offset;
        if remaining < 4 {
            return Err(RecordError::BadExtendedArea {
                view,
                offset,
                length: 0,
                remaining,
            });
        }
        let type_id = u16::from_be_bytes([block[offset], block[offset + 1]]);
        let length = u16::from_be_bytes([block[offset + 2], block[offset + 3]]);
        if usize::from(length) < 4 || usize::from(length) > remaining {
            return Err(RecordError::BadExtendedArea {
                view,
                offset,
                length,
                remaining,
            });
        }
        if type_id == 0 {
            return Err(RecordError::ReservedExtendedType { view });
        }
        extended.push(ExtendedArea {
            type_id,
            data: block[offset + 4..offset + usize::from(length)].to_vec(),
        });
        offset += usize::from(length);
    }
    Ok(FingerView {
        position,
        view_number,
        impression_type,
        quality,
        minutiae,
        extended,
    })
}

/// Writes a record back in the same format (used by tests and tools to build records).
/// Returns `None` if a view holds more than 255 minutiae, an extended area is longer than
/// 65,531 bytes or a view's block longer than 65,535, none of which the format can hold.
pub fn encode(record: &FingerRecord) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&FORMAT_ID);
    out.extend_from_slice(&VERSION_2005);
    out.extend_from_slice(&[0; 4]);
    let equipment = (u16::from(record.compliance & 0x0f) << 12) | (record.device_type & 0x0fff);
    for v in [
        equipment,
        record.width,
        record.height,
        record.resolution_x,
        record.resolution_y,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.push(u8::try_from(record.views.len()).ok()?);
    out.push(0);
    for view in &record.views {
        out.push(view.position);
        out.push((view.view_number << 4) | (view.impression_type & 0x0f));
        out.push(view.quality);
        out.push(u8::try_from(view.minutiae.len()).ok()?);
        for m in &view.minutiae {
            let kind: u16 = match m.kind {
                MinutiaKind::Other => 0,
                MinutiaKind::RidgeEnding => 1,
                MinutiaKind::Bifurcation => 2,
            };
            out.extend_from_slice(&((kind << 14) | (m.x & MAX_COORDINATE)).to_be_bytes());
            out.extend_from_slice(&(m.y & MAX_COORDINATE).to_be_bytes());
            out.push(m.angle);
            out.push(m.quality);
        }
        let mut block = Vec::new();
        for area in &view.extended {
            block.extend_from_slice(&area.type_id.to_be_bytes());
            let len = u16::try_from(area.data.len().checked_add(4)?).ok()?;
            block.extend_from_slice(&len.to_be_bytes());
            block.extend_from_slice(&area.data);
        }
        out.extend_from_slice(&u16::try_from(block.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&block);
    }
    let len = u32::try_from(out.len()).ok()?;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    Some(out)
}
