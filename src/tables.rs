//! Tables for the terminal and for Markdown.

/// Prints `rows` (the first is the header) as an aligned table: numbers right-aligned, text
/// (and the first column) left-aligned, header underlined.
pub fn print_table(rows: &[Vec<String>]) {
    for line in table_lines(rows) {
        println!("{line}");
    }
}

/// The lines [`print_table`] prints.
fn table_lines(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let numeric = |s: &str| {
        s.is_empty()
            || s == "-"
            || s.split('/')
                .all(|p| p.trim_start_matches('+').parse::<f64>().is_ok())
    };
    let text_column: Vec<bool> = (0..columns)
        .map(|c| {
            c == 0
                || rows
                    .iter()
                    .skip(1)
                    .filter_map(|r| r.get(c))
                    .any(|s| !numeric(s))
        })
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut lines = Vec::with_capacity(rows.len() + 1);
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if text_column[c] {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        lines.push(format!("  {}", line.join("  ")));
        if n == 0 {
            lines.push(format!(
                "  {}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            ));
        }
    }
    lines
}

/// Prints `rows` (the first is the header) as a Markdown table.
pub fn print_markdown(rows: &[Vec<String>]) {
    for (n, row) in rows.iter().enumerate() {
        println!("| {} |", row.join(" | "));
        if n == 0 {
            println!("|{}", "---|".repeat(row.len()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn numbers_align_right_and_text_left_under_an_underlined_header() {
        let rows = vec![
            header(&["read-out", "ACC", "note"]),
            header(&["class_il", "19.62", "x"]),
            header(&["task_il", "-", "longer"]),
        ];
        assert_eq!(
            table_lines(&rows),
            [
                "  read-out    ACC  note  ",
                "  --------  -----  ------",
                "  class_il  19.62  x     ",
                "  task_il       -  longer",
            ]
        );
    }
}
