//! How answers are printed: aligned tables for people, JSON for scripts.

use serde_json::Value;

pub struct Output {
    pub json: bool,
}

impl Output {
    /// A JSON document (in `--json` mode) or the human text.
    pub fn answer(&self, json: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{json}");
        } else {
            println!("{}", human());
        }
    }

    /// A table: JSON array of objects keyed by the headers, or aligned columns.
    pub fn table(&self, headers: &[&str], rows: &[Vec<String>]) {
        if self.json {
            let array: Vec<Value> = rows
                .iter()
                .map(|row| {
                    Value::Object(
                        headers
                            .iter()
                            .zip(row)
                            .map(|(h, v)| (h.to_string(), Value::String(v.clone())))
                            .collect(),
                    )
                })
                .collect();
            println!("{}", Value::Array(array));
            return;
        }
        print!("{}", render(headers, rows));
    }
}

/// Aligned columns, two spaces apart, headers in capitals.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let text = super::render(
            &["node", "state"],
            &[
                vec!["1".into(), "SERVING".into()],
                vec!["10".into(), "-".into()],
            ],
        );
        assert_eq!(text, "NODE  STATE\n1     SERVING\n10    -\n");
    }
}
