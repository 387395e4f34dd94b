//! Record exports as CSV with an invisible, value-preserving fingerprint (PRODUCT.md S8).
//!
//! CSV lets any cell be quoted: `"Acme"` and `Acme` are the same value to every CSV reader.
//! Where quoting is optional (the cell holds no comma, quote or line break), an export quotes
//! a cell exactly when a bit derived from the export's secret, the column name and the cell's
//! text is 1. The data are unchanged — a re-import reads the same values — but the pattern of
//! quotes names the export: a leaked file (or any part of it: rows deleted, reordered, columns
//! dropped) agrees with the bits of its own export in every cell and with any other export's
//! in about half. The secret is a keyed hash of the export id under the server's keys, so
//! nobody without them can compute the pattern of an export, strip it knowingly or forge it
//! into a file to blame someone else. A file re-saved by a spreadsheet loses the pattern;
//! tracing then falls back on the record ids of the rows (every export registers them) and
//! on the visible watermark column.
//!
//! This module does no I/O: it writes lines and reads raw cells.

use sha2::{Digest, Sha256};

/// The per-export secret the quoting pattern is derived from.
#[derive(Clone)]
pub struct FingerprintKey([u8; 32]);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(…)")
    }
}

impl FingerprintKey {
    /// A key from secret bytes (a keyed hash of the export id); `None` for fewer than 32.
    pub fn from_secret(bytes: &[u8]) -> Option<Self> {
        let mut key = [0u8; 32];
        key.copy_from_slice(bytes.get(..32)?);
        Some(FingerprintKey(key))
    }

    /// Whether the cell `text` of column `column` is written quoted (when quoting is optional).
    pub fn bit(&self, column: &str, text: &str) -> bool {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update((column.len() as u64).to_be_bytes());
        h.update(column.as_bytes());
        h.update(text.as_bytes());
        h.finalize()[0] & 1 == 1
    }
}

/// Whether CSV forces quotes around `text` (so its quoting carries no fingerprint bit).
pub fn quoting_required(text: &str) -> bool {
    text.contains([',', '"', '\r', '\n'])
}

/// The text of a cell as exported: a value a spreadsheet would run as a formula (starting with
/// `=`, `+`, `-`, `@`, tab or carriage return, and not a plain number) gets a leading
/// apostrophe, the convention spreadsheets show as text.
pub fn safe_cell_text(text: &str) -> String {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let number = text.parse::<f64>().is_ok_and(f64::is_finite) && !text.starts_with(['\t', '\r']);
    if risky && !number { format!("'{text}") } else { text.to_owned() }
}

/// Appends one CSV line (`\r\n`-terminated, RFC 4180) of `(column, text)` cells to `out`,
/// quoting where required and, elsewhere, where `key` says so.
pub fn write_line(out: &mut String, cells: &[(&str, &str)], key: Option<&FingerprintKey>) {
    for (i, (column, text)) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let quote = quoting_required(text) || key.is_some_and(|k| k.bit(column, text));
        if quote {
            out.push('"');
            out.push_str(&text.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(text);
        }
    }
    out.push_str("\r\n");
}

/// One cell as it stood in a file: its value and whether it was written in quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCell {
    pub text: String,
    pub quoted: bool,
}

/// Reads CSV text into rows of raw cells, keeping whether each cell was quoted. Lenient like a
/// spreadsheet: a byte-order mark is skipped, `\n` or `\r\n` end lines, a quote inside an
/// unquoted cell is kept as text, and an unterminated quoted cell runs to the end of the text.
/// Blank lines are skipped.
pub fn read_raw(text: &str) -> Vec<Vec<RawCell>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut row: Vec<RawCell> = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut at_cell_start = true;
    let mut chars = text.chars().peekable();
    let end_cell = |row: &mut Vec<RawCell>, cell: &mut String, quoted: &mut bool| {
        row.push(RawCell { text: std::mem::take(cell), quoted: *quoted });
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cell.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cell.push(c);
            }
            continue;
        }
        match c {
            '"' if at_cell_start => {
                in_quotes = true;
                quoted = true;
                at_cell_start = false;
            }
            ',' => {
                end_cell(&mut row, &mut cell, &mut quoted);
                at_cell_start = true;
            }
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                end_cell(&mut row, &mut cell, &mut quoted);
                let blank = row.len() == 1 && row[0].text.is_empty() && !row[0].quoted;
                if !blank {
                    rows.push(std::mem::take(&mut row));
                }
                row.clear();
                at_cell_start = true;
            }
            _ => {
                cell.push(c);
                at_cell_start = false;
            }
        }
    }
    if !at_cell_start || !cell.is_empty() || quoted || !row.is_empty() {
        end_cell(&mut row, &mut cell, &mut quoted);
        rows.push(row);
    }
    rows
}

/// How well a file's quoting agrees with an export's pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Agreement {
    /// Cells whose quoting was optional (so carried a bit).
    pub observed: usize,
    /// Of those, the cells quoted exactly as the export's key says.
    pub agreeing: usize,
}

impl Agreement {
    /// The pattern is the export's own: enough bits observed and (nearly) all agreeing. A
    /// wrong key agrees with each bit by chance only, so with 48 or more bits the chance that
    /// another export passes is below one in 10^10.
    pub fn is_match(&self) -> bool {
        self.observed >= 48 && self.agreeing * 100 >= self.observed * 97
    }
}

/// Compares the quoting of `rows` (under `header`) with `key`'s pattern, looking at no more than
/// `max_cells` cells that carry a bit. Cells of columns not in `columns` are skipped: they
/// cannot come from the export.
pub fn agreement(
    key: &FingerprintKey,
    header: &[RawCell],
    rows: &[Vec<RawCell>],
    columns: &dyn Fn(&str) -> bool,
    max_cells: usize,
) -> Agreement {
    let mut a = Agreement::default();
    let rows_with_header = std::iter::once(header).chain(rows.iter().map(Vec::as_slice));
    for row in rows_with_header {
        for (cell, column) in row.iter().zip(header) {
            if a.observed >= max_cells {
                return a;
            }
            if quoting_required(&cell.text) || !columns(&column.text) {
                continue;
            }
            a.observed += 1;
            if cell.quoted == key.bit(&column.text, &cell.text) {
                a.agreeing += 1;
            }
        }
    }
    a
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(n: u8) -> FingerprintKey {
        FingerprintKey::from_secret(&[n; 32]).unwrap()
    }

    fn export(key: &FingerprintKey, rows: &[Vec<&str>]) -> String {
        let header = ["id", "name", "city", "note"];
        let mut out = String::from("\u{feff}");
        let head: Vec<(&str, &str)> = header.iter().map(|h| (*h, *h)).collect();
        write_line(&mut out, &head, Some(key));
        for row in rows {
            let cells: Vec<(&str, &str)> = header.iter().copied().zip(row.iter().copied()).collect();
            write_line(&mut out, &cells, Some(key));
        }
        out
    }

    fn sample_rows(n: usize) -> Vec<Vec<String>> {
        (0..n)
            .map(|i| {
                vec![
                    format!("0193-{i:04}"),
                    format!("客户{i}"),
                    ["杭州", "北京", "上海"][i % 3].to_owned(),
                    if i % 4 == 0 { "has, comma".to_owned() } else { format!("note {i}") },
                ]
            })
            .collect()
    }

    #[test]
    fn values_read_back_unchanged_whatever_the_quoting() {
        let rows = sample_rows(40);
        let refs: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
        let text = export(&key(1), &refs);
        let mut reader = csv::ReaderBuilder::new().from_reader(text.trim_start_matches('\u{feff}').as_bytes());
        let read: Vec<Vec<String>> = reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
        assert_eq!(read, rows);
        let raw = read_raw(&text);
        assert_eq!(raw.len(), 41);
        assert_eq!(raw[1].iter().map(|c| c.text.clone()).collect::<Vec<_>>(), rows[0]);
        // Some optional cells are quoted and some are not.
        let quoted = raw.iter().flatten().filter(|c| c.quoted && !quoting_required(&c.text)).count();
        let plain = raw.iter().flatten().filter(|c| !c.quoted).count();
        assert!(quoted > 20 && plain > 20, "{quoted} quoted, {plain} plain");
    }

    #[test]
    fn the_pattern_names_its_own_export_even_from_a_fragment() {
        let rows = sample_rows(60);
        let refs: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(String::as_str).collect()).collect();
        let text = export(&key(7), &refs);
        let raw = read_raw(&text);
        let all = |_: &str| true;
        let own = agreement(&key(7), &raw[0], &raw[1..], &all, 10_000);
        assert!(own.is_match(), "{own:?}");
        assert_eq!(own.agreeing, own.observed);
        for other in [1u8, 2, 3, 8, 200] {
            let a = agreement(&key(other), &raw[0], &raw[1..], &all, 10_000);
            assert!(!a.is_match(), "key {other}: {a:?}");
        }
        // A fragment: rows 30..50 reversed, the note column dropped, no header quoting kept.
        let fragment: Vec<Vec<RawCell>> = raw[30..50].iter().rev().map(|r| r[..3].to_vec()).collect();
        let header: Vec<RawCell> = raw[0][..3].iter().map(|c| RawCell { quoted: false, ..c.clone() }).collect();
        let a = agreement(&key(7), &header, &fragment, &all, 10_000);
        assert!(a.observed >= 48);
        assert!(a.agreeing * 100 >= a.observed * 90, "{a:?}");
    }

    #[test]
    fn too_few_bits_never_match() {
        let a = Agreement { observed: 20, agreeing: 20 };
        assert!(!a.is_match());
        assert!(Agreement { observed: 100, agreeing: 97 }.is_match());
        assert!(!Agreement { observed: 100, agreeing: 90 }.is_match());
    }

    #[test]
    fn raw_reader_is_lenient() {
        let raw = read_raw("a,\"b\"\"c\",d\"e\n\n\"x\ny\",\"\"\r\nlast,\"open");
        assert_eq!(raw.len(), 3);
        assert_eq!(raw[0][1], RawCell { text: "b\"c".into(), quoted: true });
        assert_eq!(raw[0][2], RawCell { text: "d\"e".into(), quoted: false });
        assert_eq!(raw[1][0].text, "x\ny");
        assert_eq!(raw[1][1], RawCell { text: String::new(), quoted: true });
        assert_eq!(raw[2][1], RawCell { text: "open".into(), quoted: true });
        assert!(read_raw("").is_empty());
        assert_eq!(read_raw("only").len(), 1);
    }

    #[test]
    fn formulas_are_defused_and_numbers_kept() {
        assert_eq!(safe_cell_text("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(safe_cell_text("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(safe_cell_text("-12.5"), "-12.5");
        assert_eq!(safe_cell_text("+86 138"), "'+86 138");
        assert_eq!(safe_cell_text("张三"), "张三");
    }
}
