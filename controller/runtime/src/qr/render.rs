//! QR codes as pictures: the module matrix (error correction level M), an SVG drawn from it by
//! hand, a grayscale PNG, and a printable HTML sheet of many codes.

use std::fmt::Write as _;

/// Light modules around the code on every side, as the QR specification asks for.
pub const QUIET_ZONE: usize = 4;

/// Pixels per module in a PNG: a version-10 code (what a provisioning link needs) becomes about
/// 500 px square, plenty for a phone camera or zbarimg.
pub const PNG_SCALE: usize = 8;

/// Why a code cannot be drawn.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The text does not fit into a QR code.
    #[error("cannot encode {length} characters as a QR code: {source}")]
    Encode {
        /// Length of the text.
        length: usize,
        /// The encoder's reason.
        #[source]
        source: qrcode::types::QrError,
    },
    /// The PNG encoder failed.
    #[error("cannot encode the PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// The modules of one QR code, row by row, without the quiet zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    width: usize,
    dark: Vec<bool>,
}

impl Matrix {
    /// Encode `text` at error correction level M (about 15 % of the code may be damaged).
    pub fn encode(text: &str) -> Result<Matrix, RenderError> {
        let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).map_err(
            |source| RenderError::Encode {
                length: text.len(),
                source,
            },
        )?;
        Ok(Matrix {
            width: code.width(),
            dark: code
                .to_colors()
                .into_iter()
                .map(|c| c == qrcode::Color::Dark)
                .collect(),
        })
    }

    /// Modules per side, without the quiet zone.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Modules per side with the quiet zone.
    pub fn size(&self) -> usize {
        self.width + 2 * QUIET_ZONE
    }

    /// Whether the module at column `x`, row `y` (quiet zone included) is dark.
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        let (Some(x), Some(y)) = (x.checked_sub(QUIET_ZONE), y.checked_sub(QUIET_ZONE)) else {
            return false;
        };
        x < self.width && y < self.width && self.dark[y * self.width + x]
    }

    /// The code as SVG in module units (one unit per module, quiet zone included), white
    /// behind black. `pixels` sets its width and height; without it the SVG takes the size its
    /// container gives it (as in the sheet).
    pub fn svg(&self, pixels: Option<usize>) -> String {
        let size = self.size();
        let mut path = String::new();
        // One rectangle per horizontal run of dark modules keeps the path short.
        for y in 0..size {
            let mut x = 0;
            while x < size {
                if !self.is_dark(x, y) {
                    x += 1;
                    continue;
                }
                let start = x;
                while x < size && self.is_dark(x, y) {
                    x += 1;
                }
                let _ = write!(path, "M{start} {y}h{}v1h-{}z", x - start, x - start);
            }
        }
        let dimensions = pixels
            .map(|p| format!(r#" width="{p}" height="{p}""#))
            .unwrap_or_default();
        format!(
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}"{dimensions} shape-rendering="crispEdges"><rect width="{size}" height="{size}" fill="#fff"/><path fill="#000" d="{path}"/></svg>"##
        )
    }

    /// The code as an 8-bit grayscale PNG, `scale` pixels per module.
    pub fn png(&self, scale: usize) -> Result<Vec<u8>, RenderError> {
        let side = self.size() * scale;
        let mut pixels = Vec::with_capacity(side * side);
        for y in 0..side {
            for x in 0..side {
                pixels.push(if self.is_dark(x / scale, y / scale) {
                    0
                } else {
                    255
                });
            }
        }
        let mut out = Vec::new();
        // A side of a QR code is at most 177 + 8 modules: the cast cannot truncate.
        let side = u32::try_from(side).unwrap_or(u32::MAX);
        let mut encoder = png::Encoder::new(&mut out, side, side);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
        Ok(out)
    }
}

/// One code on a sheet: its picture and the lines printed below it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SheetEntry {
    /// The SVG (from [`Matrix::svg`] without a size).
    pub svg: String,
    /// Lines for a person: the id, the serial number.
    pub caption: Vec<String>,
}

/// A printable HTML page: `title` on top, then every code at 45 mm with its caption below,
/// three to a row, never split across pages. Captions and title are escaped; the SVGs are
/// inlined as they are.
pub fn sheet(title: &str, entries: &[SheetEntry]) -> String {
    let mut html = String::new();
    let title = escape(title);
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
@page {{ size: A4; margin: 12mm; }}
body {{ font-family: sans-serif; margin: 0; color: #000; background: #fff; }}
h1 {{ font-size: 12pt; margin: 0 0 6mm; }}
.codes {{ display: grid; grid-template-columns: repeat(3, 1fr); gap: 6mm; }}
figure {{ margin: 0; padding: 3mm; border: 0.2mm dashed #999; text-align: center;
  break-inside: avoid; page-break-inside: avoid; }}
figure svg {{ width: 45mm; height: 45mm; display: block; margin: 0 auto; }}
figcaption {{ font-family: monospace; font-size: 9pt; margin-top: 2mm; overflow-wrap: anywhere; }}
figcaption .id {{ font-weight: bold; font-size: 10pt; }}
.note {{ font-size: 8pt; color: #444; margin-bottom: 4mm; }}
@media print {{ figure {{ border-color: #ccc; }} .note {{ display: none; }} }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="note">Each code carries a secret (a proof, a token or a password): print it, hand it over, and keep this page as safe as the keys.</p>
<div class="codes">
"#
    );
    for entry in entries {
        html.push_str("<figure>\n");
        html.push_str(&entry.svg);
        html.push_str("\n<figcaption>");
        for (i, line) in entry.caption.iter().enumerate() {
            if i == 0 {
                let _ = write!(html, r#"<div class="id">{}</div>"#, escape(line));
            } else {
                let _ = write!(html, "<div>{}</div>", escape(line));
            }
        }
        html.push_str("</figcaption>\n</figure>\n");
    }
    html.push_str("</div>\n</body>\n</html>\n");
    html
}

/// Text made safe for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
