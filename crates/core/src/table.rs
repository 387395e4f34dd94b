//! Reading CSV tables for imports and `custodian dedupe`: UTF-8 only (UTF-16 and GBK/GB18030
//! files are refused with the command that converts them), RFC 4180 quoting checked strictly,
//! and fields, records, columns and rows capped. Errors name the line. No I/O.

/// Why a file is not a usable table (the message names the line where it can).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TableError(pub String);

macro_rules! bail {
    ($($arg:tt)*) => { return Err(TableError(format!($($arg)*))) };
}

type Result<T> = std::result::Result<T, TableError>;

/// Largest field accepted (bytes).
pub const MAX_FIELD_BYTES: usize = 1 << 20;
/// Largest record (line, or lines of one quoted record) accepted (bytes).
pub const MAX_RECORD_BYTES: usize = 4 << 20;
/// Most columns accepted in a row.
pub const MAX_COLUMNS: usize = 2048;
/// Most data rows accepted.
pub const MAX_ROWS: usize = 20_000_000;

/// A parsed CSV file.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Line number (1-based) where each row starts.
    pub lines: Vec<usize>,
}

/// Parses CSV bytes into a header and rows of the same width.
pub fn parse_table(bytes: &[u8]) -> Result<Table> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        bail!(
            "the file is UTF-16 encoded; convert it to UTF-8 first, e.g. `iconv -f UTF-16 -t UTF-8 in.csv > out.csv`"
        );
    }
    let bytes = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("the file is empty");
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let offset = e.valid_up_to();
            let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
            bail!(
                "the file is not valid UTF-8 (first bad byte 0x{:02X} at byte {offset}, line {line}); it is probably \
                 GBK/GB18030 (Excel in Chinese locales saves CSV that way). Convert it first, e.g. \
                 `iconv -f GBK -t UTF-8 in.csv > in-utf8.csv`, and run again",
                bytes[offset]
            );
        }
    };
    if let Some(offset) = text.find('\0') {
        let line = text[..offset].matches('\n').count() + 1;
        bail!("the file contains a NUL byte (line {line}); it is not a text CSV file");
    }
    let (records, lines) = parse_records(text)?;
    let mut records = records.into_iter();
    let mut lines = lines.into_iter();
    let Some(header) = records.next() else {
        bail!("the file is empty");
    };
    lines.next();
    let header: Vec<String> = header.into_iter().map(|h| h.trim().to_owned()).collect();
    let mut rows = Vec::new();
    let mut row_lines = Vec::new();
    for (row, line) in records.zip(lines) {
        if row.len() != header.len() {
            bail!("line {line} has {} fields but the header has {} columns", row.len(), header.len());
        }
        rows.push(row);
        row_lines.push(line);
        if rows.len() > MAX_ROWS {
            bail!("more than {MAX_ROWS} rows; split the file");
        }
    }
    if rows.is_empty() {
        bail!("the file has a header but no data rows");
    }
    Ok(Table { header, rows, lines: row_lines })
}

/// RFC 4180 records: comma-separated, CRLF or LF line ends, fields optionally in double quotes
/// with "" for a quote. Strict where lenient parsers guess: a quote inside an unquoted field,
/// text after a closing quote and an unclosed quote are errors naming the line. Blank lines are
/// skipped.
fn parse_records(text: &str) -> Result<(Vec<Vec<String>>, Vec<usize>)> {
    let mut records = Vec::new();
    let mut starts = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0usize;
    let mut line = 1usize;
    while i < bytes.len() {
        // Blank line.
        if bytes[i] == b'\n' {
            i += 1;
            line += 1;
            continue;
        }
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 2;
            line += 1;
            continue;
        }
        let record_start = i;
        let record_line = line;
        let mut fields: Vec<String> = Vec::new();
        loop {
            if fields.len() >= MAX_COLUMNS {
                bail!("line {record_line} has more than {MAX_COLUMNS} columns");
            }
            let mut field = String::new();
            if bytes.get(i) == Some(&b'"') {
                let quote_line = line;
                i += 1;
                let mut closed = false;
                let mut chunk_start = i;
                while i < bytes.len() {
                    match bytes[i] {
                        b'"' if bytes.get(i + 1) == Some(&b'"') => {
                            field.push_str(&text[chunk_start..=i]);
                            i += 2;
                            chunk_start = i;
                        }
                        b'"' => {
                            field.push_str(&text[chunk_start..i]);
                            i += 1;
                            closed = true;
                            break;
                        }
                        b'\n' => {
                            line += 1;
                            i += 1;
                        }
                        _ => i += 1,
                    }
                    if i - record_start > MAX_RECORD_BYTES {
                        bail!(
                            "the record starting on line {record_line} is longer than {} MiB (an unclosed quote?)",
                            MAX_RECORD_BYTES >> 20
                        );
                    }
                }
                if !closed {
                    bail!("line {quote_line}: a quoted field is never closed (missing \")");
                }
                match bytes.get(i) {
                    None | Some(b',') | Some(b'\n') => {}
                    Some(b'\r') if bytes.get(i + 1) == Some(&b'\n') => {}
                    Some(_) => bail!(
                        "line {line}: unexpected text after a closing quote (write \"\" for a quote inside a quoted field)"
                    ),
                }
            } else {
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b',' | b'\n') {
                    if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                        break;
                    }
                    if bytes[i] == b'"' {
                        bail!(
                            "line {line}: a quote inside an unquoted field (quote the whole field and write \"\" for the quote)"
                        );
                    }
                    i += 1;
                }
                field.push_str(&text[start..i]);
            }
            if field.len() > MAX_FIELD_BYTES {
                bail!("line {record_line}: a field is longer than {} KiB", MAX_FIELD_BYTES >> 10);
            }
            if i - record_start > MAX_RECORD_BYTES {
                bail!("line {record_line} is longer than {} MiB", MAX_RECORD_BYTES >> 20);
            }
            fields.push(field);
            match bytes.get(i) {
                Some(b',') => {
                    i += 1;
                }
                Some(b'\r') => {
                    i += 2;
                    line += 1;
                    break;
                }
                Some(b'\n') => {
                    i += 1;
                    line += 1;
                    break;
                }
                _ => break,
            }
        }
        records.push(fields);
        starts.push(record_line);
    }
    Ok((records, starts))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn err(bytes: &[u8]) -> String {
        parse_table(bytes).unwrap_err().to_string()
    }

    #[test]
    fn parses_rfc4180() {
        let t = parse_table(b"\xEF\xBB\xBFid,name\r\n1,\"Zhang, Wei\"\r\n\r\n2,\"say \"\"hi\"\"\nnext line\"\n3,\n")
            .unwrap();
        assert_eq!(t.header, vec!["id", "name"]);
        assert_eq!(t.rows, vec![vec!["1", "Zhang, Wei"], vec!["2", "say \"hi\"\nnext line"], vec!["3", ""]]);
        assert_eq!(t.lines, vec![2, 4, 6]);
    }

    #[test]
    fn refuses_bad_files() {
        assert!(err(b"").contains("empty"));
        assert!(err(b"  \n\n").contains("empty"));
        assert!(err(b"id,name\n").contains("no data rows"));
        let gbk = b"id,name\n1,\xd5\xc5\xce\xb0\n";
        let message = err(gbk);
        assert!(
            message.contains("UTF-8") && message.contains("iconv -f GBK -t UTF-8") && message.contains("line 2"),
            "{message}"
        );
        assert!(err(b"\xFF\xFEi\0d\0").contains("UTF-16"));
        assert!(err(b"id,name\n1,\"unclosed\n2,b\n").contains("never closed"));
        assert!(err(b"id,name\n1,ab\"c\n").contains("quote inside an unquoted field"));
        assert!(err(b"id,name\n1,\"a\"b\n").contains("after a closing quote"));
        assert!(err(b"id,name\n1,a,extra\n").contains("line 2 has 3 fields"));
        assert!(err(b"id,name\n1,a\0b\n").contains("NUL"));
        let wide = format!("{}\n", vec!["x"; MAX_COLUMNS + 1].join(","));
        assert!(err(wide.as_bytes()).contains("more than 2048 columns"));
        let long = format!("id,name\n1,{}\n", "a".repeat(MAX_FIELD_BYTES + 1));
        assert!(err(long.as_bytes()).contains("longer than"));
    }
}
