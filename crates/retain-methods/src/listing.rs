//! The text of `retain methods`: a table of every method, or one method's card.

use std::fmt::Write;

use crate::MethodDescriptor;

/// One line per method: name, family, summary, aligned in columns.
pub fn table<'a>(methods: impl IntoIterator<Item = &'a MethodDescriptor>) -> String {
    let rows: Vec<[&str; 3]> = methods
        .into_iter()
        .map(|d| [d.name, d.family.as_str(), d.summary])
        .collect();
    let header = ["method", "family", "summary"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (name, family) = (width(0), width(1));
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter().copied()) {
        let _ = writeln!(out, "{:<name$}  {:<family$}  {}", row[0], row[1], row[2]);
    }
    out
}

/// Everything `d` declares: summary, family, paper, capabilities, every hyper-parameter with
/// its type, default and meaning, and an example `[method]` table.
pub fn card(d: &MethodDescriptor) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", d.name, d.family);
    let _ = writeln!(out, "  {}", d.summary);
    let _ = writeln!(out, "  paper: {}", d.paper);
    let c = d.capabilities;
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(
        out,
        "  graph-captured step: {}; keeps samples: {}",
        yes(c.capturable),
        yes(c.keeps_samples)
    );
    if d.params.is_empty() {
        let _ = writeln!(out, "\nhyper-parameters: none");
    } else {
        let kinds: Vec<String> = d.params.iter().map(|p| p.kind.to_string()).collect();
        let defaults: Vec<String> = d.params.iter().map(|p| p.default.to_string()).collect();
        let w = |cells: &mut dyn Iterator<Item = usize>, title: usize| {
            cells.max().unwrap_or(0).max(title)
        };
        let name_w = w(&mut d.params.iter().map(|p| p.name.chars().count()), 3);
        let kind_w = w(&mut kinds.iter().map(|k| k.chars().count()), 4);
        let default_w = w(&mut defaults.iter().map(|k| k.chars().count()), 7);
        let _ = writeln!(out, "\nhyper-parameters:");
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<kind_w$}  {:<default_w$}  meaning",
            "key", "type", "default"
        );
        for ((p, kind), default) in d.params.iter().zip(&kinds).zip(&defaults) {
            let _ = writeln!(
                out,
                "  {:<name_w$}  {:<kind_w$}  {:<default_w$}  {}",
                p.name, kind, default, p.doc
            );
        }
    }
    let _ = writeln!(out, "\nexample:\n  [method]\n  name = \"{}\"", d.name);
    for line in d.example.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}
