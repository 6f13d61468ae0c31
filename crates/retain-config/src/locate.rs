//! Finding the line of a dotted key in TOML text, for errors found after parsing.
//!
//! `toml` reports lines for syntax and type errors itself; semantic checks run on the parsed
//! structs, whose spans are gone. This scanner covers the layouts people write by hand:
//! `[a.b]` headers followed by `key = …`, and dotted keys (`b.key = …`) inside a table.

/// 1-based line of `dotted_key` (e.g. `"stream.tasks"`) in `source`, if it can be found.
pub fn line_of_key(source: &str, dotted_key: &str) -> Option<usize> {
    let mut section = String::new();
    for (index, raw_line) in source.lines().enumerate() {
        let line = raw_line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            let end = header.find(']')?;
            section = header[..end].trim().to_owned();
            continue;
        }
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        let key: String = key
            .trim()
            .split('.')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(".");
        let full = if section.is_empty() {
            key
        } else {
            format!("{section}.{key}")
        };
        if full == dotted_key {
            return Some(index + 1);
        }
    }
    None
}

/// 1-based line of the `[dotted_table]` header in `source`, if there is one.
pub fn line_of_table(source: &str, dotted_table: &str) -> Option<usize> {
    source
        .lines()
        .position(|raw_line| {
            raw_line
                .trim()
                .strip_prefix('[')
                .and_then(|h| h.split_once(']'))
                .is_some_and(|(name, _)| {
                    name.split('.').map(str::trim).collect::<Vec<_>>().join(".") == dotted_table
                })
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::line_of_key;

    #[test]
    fn finds_keys_in_sections_and_dotted_form() {
        let text =
            "name = \"x\"\n\n[stream]\n# comment\ntasks = 5\n[training]\noptimizer.lr = 0.1\n";
        assert_eq!(line_of_key(text, "name"), Some(1));
        assert_eq!(line_of_key(text, "stream.tasks"), Some(5));
        assert_eq!(line_of_key(text, "training.optimizer.lr"), Some(7));
        assert_eq!(line_of_key(text, "stream.missing"), None);
        assert_eq!(super::line_of_table(text, "training"), Some(6));
        assert_eq!(super::line_of_table(text, "model"), None);
    }
}
