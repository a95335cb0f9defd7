//! Reading the order dataset: the Kaggle "Online Shop Business" file
//! (`Sales Transaction v.4a.csv`), plain or gzip-compressed.
//!
//! Every row becomes an [`OrderLine`]. The file has no line number of its own,
//! so `line_no` is the 1-based position of the row among the rows of its
//! transaction, in file order: the dataset holds exact duplicate rows that are
//! still distinct lines, so `(transaction_no, product_no)` is not a key but
//! `(transaction_no, line_no)` is.

use crate::order_line::{OrderLine, Price};
use chrono::NaiveDate;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// The header the file must start with, in this order.
pub const COLUMNS: [&str; 8] = [
    "TransactionNo",
    "Date",
    "ProductNo",
    "ProductName",
    "Price",
    "Quantity",
    "CustomerNo",
    "Country",
];

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot open dataset {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the header must be `{expected}`, found `{found}`")]
    Header {
        path: String,
        expected: String,
        found: String,
    },
    #[error("{path}, line {line}: {reason}")]
    Row {
        path: String,
        line: u64,
        reason: String,
    },
}

/// A row that did not parse, kept when the caller asked to skip bad rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
}

/// What a read produced: the order lines in file order, and the rows skipped.
#[derive(Debug, Default)]
pub struct Dataset {
    pub lines: Vec<OrderLine>,
    pub bad_rows: Vec<BadRow>,
}

/// Reads the whole dataset. `.csv.gz` is recognised by its gzip magic bytes,
/// not by its name, so a renamed file still reads. With `skip_bad_rows`
/// false the first bad row stops the read with its line number and reason.
pub fn read(path: &Path, skip_bad_rows: bool, limit: Option<usize>) -> Result<Dataset, DatasetError> {
    let shown = path.display().to_string();
    let open_err = |source| DatasetError::Open { path: shown.clone(), source };
    let mut file = BufReader::new(File::open(path).map_err(open_err)?);
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(open_err)?;
    let file = BufReader::new(File::open(path).map_err(open_err)?);
    let input: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    read_from(input, &shown, skip_bad_rows, limit)
}

/// Reads order lines from any CSV stream; `name` is used in error messages.
pub fn read_from(
    input: impl Read,
    name: &str,
    skip_bad_rows: bool,
    limit: Option<usize>,
) -> Result<Dataset, DatasetError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let header = csv.headers().map_err(|e| DatasetError::Header {
        path: name.to_string(),
        expected: COLUMNS.join(","),
        found: e.to_string(),
    })?;
    if header.iter().map(str::trim).ne(COLUMNS.iter().copied()) {
        return Err(DatasetError::Header {
            path: name.to_string(),
            expected: COLUMNS.join(","),
            found: header.iter().collect::<Vec<_>>().join(","),
        });
    }
    let mut dataset = Dataset::default();
    let mut next_line_no: HashMap<String, i32> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        if limit.is_some_and(|l| dataset.lines.len() >= l) {
            break;
        }
        let line = csv.position().line() + 1;
        let parsed = match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => parse_row(&record),
            Err(e) => Err(format!("unreadable CSV: {e}")),
        };
        match parsed {
            Ok(mut order_line) => {
                let counter = next_line_no.entry(order_line.transaction_no.clone()).or_insert(0);
                *counter += 1;
                order_line.line_no = *counter;
                dataset.lines.push(order_line);
            }
            Err(reason) if skip_bad_rows => dataset.bad_rows.push(BadRow { line, reason }),
            Err(reason) => {
                return Err(DatasetError::Row { path: name.to_string(), line, reason });
            }
        }
    }
    Ok(dataset)
}

/// Parses one CSV record; `line_no` is filled in by the caller.
fn parse_row(r: &csv::StringRecord) -> Result<OrderLine, String> {
    if r.len() != COLUMNS.len() {
        return Err(format!("expected {} fields, found {}", COLUMNS.len(), r.len()));
    }
    let field = |i: usize| r.get(i).unwrap_or("").trim();
    let transaction_no = field(0);
    let digits = transaction_no.strip_prefix('C').unwrap_or(transaction_no);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("TransactionNo `{transaction_no}` is not digits with an optional C prefix"));
    }
    let order_date = parse_us_date(field(1)).ok_or_else(|| format!("Date `{}` is not M/D/YYYY", field(1)))?;
    let product_no = field(2);
    if product_no.is_empty() {
        return Err("ProductNo is empty".into());
    }
    let price = Price::parse(field(4)).map_err(|e| format!("Price {e}"))?;
    let quantity: i32 = field(5)
        .parse()
        .map_err(|_| format!("Quantity `{}` is not a whole number", field(5)))?;
    let customer_no = match field(6) {
        "" | "NA" => None,
        c => Some(c.to_string()),
    };
    Ok(OrderLine {
        transaction_no: transaction_no.to_string(),
        line_no: 0,
        order_date,
        product_no: product_no.to_string(),
        product_name: field(3).to_string(),
        price,
        quantity,
        customer_no,
        country: field(7).to_string(),
    })
}

/// `M/D/YYYY` without leading zeros, as the dataset writes dates.
fn parse_us_date(text: &str) -> Option<NaiveDate> {
    let mut parts = text.split('/');
    let month = parts.next()?.parse().ok()?;
    let day = parts.next()?.parse().ok()?;
    let year = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    NaiveDate::from_ymd_opt(year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "TransactionNo,Date,ProductNo,ProductName,Price,Quantity,CustomerNo,Country\r\n";

    fn read_str(body: &str, skip: bool) -> Result<Dataset, DatasetError> {
        read_from(format!("{HEADER}{body}").as_bytes(), "test.csv", skip, None)
    }

    #[test]
    fn numbers_duplicate_rows_as_distinct_lines_and_maps_na() {
        let d = read_str(
            "581475,12/9/2019,22596,\"Record Frame 7\"\" Single Size\",10.65,36,NA,United Kingdom\r\n\
             581475,12/9/2019,22596,\"Record Frame 7\"\" Single Size\",10.65,36,NA,United Kingdom\r\n\
             C581476,1/2/2019,85123A,Heart,5.13,-2,13069,EIRE\r\n",
            false,
        )
        .unwrap();
        let l = &d.lines;
        assert_eq!((l[0].line_no, l[1].line_no, l[2].line_no), (1, 2, 1));
        assert_eq!(l[0].product_name, "Record Frame 7\" Single Size");
        assert_eq!(l[0].customer_no, None);
        assert_eq!(l[2].order_date, NaiveDate::from_ymd_opt(2019, 1, 2).unwrap());
        assert!(l[2].is_cancellation());
        assert_eq!(l[2].line_total_cents(), -1026);
    }

    #[test]
    fn bad_rows_name_the_line_and_the_field() {
        let err = read_str("581475,12/9/2019,1,a,10.65,1,1,UK\r\n581475,13/45/2019,1,a,1,1,1,UK\r\n", false)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "test.csv, line 3: Date `13/45/2019` is not M/D/YYYY");
        let err = read_str("581475,12/9/2019,1,a,ten,1,1,UK\r\n", false).unwrap_err().to_string();
        assert!(err.contains("line 2: Price `ten` is not a decimal number"), "{err}");
        let d = read_str("581475,12/9/2019,1,a,ten,1,1,UK\r\n581475,12/9/2019,1,a,1,1,1,UK\r\n", true).unwrap();
        assert_eq!(d.lines.len(), 1);
        assert_eq!(d.bad_rows, vec![BadRow { line: 2, reason: "Price `ten` is not a decimal number".into() }]);
    }

    #[test]
    fn wrong_header_is_refused() {
        let err = read_from("a,b,c\r\n1,2,3\r\n".as_bytes(), "x.csv", false, None).unwrap_err();
        assert!(err.to_string().contains("the header must be `TransactionNo,Date,"), "{err}");
    }
}
