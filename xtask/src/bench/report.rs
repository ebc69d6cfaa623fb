//! Results as a Markdown table that also reads well in a terminal, and
//! the formatting of numbers in it.

use std::time::Duration;

/// A table of text cells, the first row its header.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A section heading: a row with only its first cell, in bold.
    pub fn section(&mut self, title: &str) {
        self.rows.push(vec![format!("**{title}**")]);
    }

    /// Renders it as Markdown with padded columns.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let cell = |row: &Vec<String>, i: usize| row.get(i).cloned().unwrap_or_default();
        let widths: Vec<usize> = (0..columns)
            .map(|i| {
                self.rows
                    .iter()
                    .map(|row| cell(row, i).chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &Vec<String>| {
            let cells: Vec<String> = (0..columns)
                .map(|i| format!("{:<width$}", cell(row, i), width = widths[i]))
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut text = String::new();
        for (index, row) in self.rows.iter().enumerate() {
            text.push_str(&line(row));
            if index == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                text.push_str(&format!("|-{}-|\n", rule.join("-|-")));
            }
        }
        text
    }
}

/// `12,345`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `812 µs`, `2.34 ms`, `1.20 s`.
pub fn latency(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1e6 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// `23.1 MiB` from KiB.
pub fn mebibytes(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `1.42x`.
pub fn ratio(numerator: f64, denominator: f64) -> String {
    if denominator > 0.0 {
        format!("{:.2}x", numerator / denominator)
    } else {
        "-".to_owned()
    }
}

/// `12.5%`.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// `target: met` or `target: MISSED`.
pub fn verdict(target: &str, met: bool) -> String {
    format!("{target}: {}", if met { "met" } else { "MISSED" })
}

/// The median of some durations (the upper one of an even count).
pub fn median(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(latency(Duration::from_micros(812)), "812 µs");
        assert_eq!(latency(Duration::from_micros(2340)), "2.34 ms");
        assert_eq!(mebibytes(2048), "2.0 MiB");
        assert_eq!(ratio(3.0, 2.0), "1.50x");
        assert_eq!(ratio(1.0, 0.0), "-");
        assert_eq!(percent(0.125), "12.5%");
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(30), ms(10), ms(20)]), Some(ms(20)));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn tables_pad_their_columns() {
        let mut table = Table::new(&["", "a"]);
        table.section("One");
        table.row(vec!["x".into(), "long cell".into()]);
        let text = table.render();
        assert!(text.starts_with("|         | a         |\n|---------|-----------|\n"));
        assert!(text.contains("| **One** |           |\n"));
        assert!(text.contains("| x       | long cell |\n"));
    }
}
