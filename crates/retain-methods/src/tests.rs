use super::*;

fn parsed(source: &str) -> toml::Table {
    source.parse().unwrap_or_else(|e| panic!("{source:?}: {e}"))
}

fn message(result: Result<Box<dyn retain_train::Method>, retain_train::TrainError>) -> String {
    match result {
        Ok(method) => panic!("`{}` was built", method.name()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn names_are_unique_and_well_formed() {
    let names = names();
    assert!(names.len() >= 19, "{names:?}");
    for (i, name) in names.iter().enumerate() {
        assert!(!names[..i].contains(name), "`{name}` registered twice");
        let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.split('-').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
        assert!(ok, "`{name}` is not lower case words joined by dashes");
    }
    for expected in [
        "naive",
        "ewc",
        "online-ewc",
        "lwf",
        "joint",
        "replay",
        "der",
        "gem",
        "agem",
    ] {
        assert!(find(expected).is_some(), "`{expected}` is not registered");
    }
    assert!(find("no-such-method").is_none());
}

#[test]
fn every_method_builds_from_its_example_and_says_what_it_declares() {
    for d in all() {
        let method = d
            .build(&parsed(d.example))
            .unwrap_or_else(|e| panic!("`{}` from its example: {e}", d.name));
        assert_eq!(method.name(), d.name);
        assert_eq!(
            method.capturable(),
            d.capabilities.capturable,
            "`{}`: the descriptor's capturable disagrees with the method's",
            d.name
        );
        assert!(!d.summary.is_empty() && !d.paper.is_empty(), "`{}`", d.name);
        for p in d.params {
            assert!(!p.doc.is_empty(), "`{}`.`{}` has no doc", d.name, p.name);
        }
    }
}

#[test]
fn defaults_come_from_the_schema() {
    for d in all() {
        let required: Vec<&str> = d
            .params
            .iter()
            .filter(|p| p.default == ParamDefault::Required)
            .map(|p| p.name)
            .collect();
        match required.first() {
            None => {
                let resolved = d.resolve(&toml::Table::new()).unwrap();
                for p in d.params {
                    let filled = resolved.contains_key(p.name);
                    assert_eq!(
                        filled,
                        matches!(p.default, ParamDefault::Value(_)),
                        "`{}`.`{}`",
                        d.name,
                        p.name
                    );
                }
                d.build(&toml::Table::new())
                    .unwrap_or_else(|e| panic!("`{}` with every default: {e}", d.name));
            }
            Some(key) => {
                let err = message(d.build(&toml::Table::new()));
                assert!(err.contains(&format!("missing key `{key}`")), "{err}");
            }
        }
    }
}

#[test]
fn unknown_keys_are_refused_by_name() {
    for d in all() {
        let mut params = parsed(d.example);
        params.insert("no_such_key".into(), toml::Value::Integer(1));
        let err = message(d.build(&params));
        assert!(
            err.contains("unknown key `no_such_key`"),
            "`{}`: {err}",
            d.name
        );
        assert!(err.contains(d.name), "`{}`: {err}", d.name);
        if let Some(first) = d.params.first() {
            assert!(
                err.contains(first.name),
                "`{}` lists its keys: {err}",
                d.name
            );
        }
    }
}

#[test]
fn ill_typed_values_are_refused_by_name() {
    use toml::Value as V;
    for d in all() {
        for p in d.params {
            let wrong = match p.kind {
                ParamKind::Float | ParamKind::Path => V::Boolean(true),
                ParamKind::Count => V::Integer(-1),
                ParamKind::Bool => V::Integer(1),
                ParamKind::Choice(_) => V::String("no-such-choice".into()),
                ParamKind::Strings => V::Array(vec![V::Integer(3)]),
                ParamKind::Counts => V::Array(vec![V::String("3".into())]),
            };
            let mut params = parsed(d.example);
            params.insert(p.name.into(), wrong.clone());
            let err = message(d.build(&params));
            assert!(
                err.contains(&format!("`{}` must be", p.name)),
                "`{}`.`{}` = {wrong}: {err}",
                d.name,
                p.name
            );
        }
    }
}

#[test]
fn an_integer_is_read_as_a_float() {
    let ewc = find("ewc").unwrap();
    let resolved = ewc.resolve(&parsed("lambda = 3")).unwrap();
    assert_eq!(resolved["lambda"], toml::Value::Float(3.0));
}

#[test]
fn one_method_is_the_joint_reference() {
    let references: Vec<&str> = all()
        .filter(|d| d.capabilities.joint_reference)
        .map(|d| d.name)
        .collect();
    assert_eq!(references, ["joint"]);
    assert_eq!(joint_reference().unwrap().name, "joint");
}

#[test]
fn the_table_lists_every_method_in_aligned_columns() {
    let text = table(all());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), names().len() + 1);
    assert!(lines[0].starts_with("method"), "{text}");
    let family_column = lines[0].find("family").unwrap();
    for (line, d) in lines[1..].iter().zip(all()) {
        assert!(line.starts_with(d.name), "{line}");
        assert_eq!(
            line[family_column..].split("  ").next(),
            Some(d.family.as_str()),
            "{line}"
        );
        assert!(line.ends_with(d.summary), "{line}");
    }
}

#[test]
fn a_card_shows_every_hyper_parameter_with_type_and_default() {
    let ewc = find("ewc").unwrap();
    let text = card(ewc);
    assert!(text.starts_with("ewc (regularisation)\n"), "{text}");
    assert!(text.contains("Kirkpatrick"), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("fisher "))
        .unwrap();
    let cells: Vec<&str> = row
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        [
            "fisher",
            "\"per_sample\" | \"per_batch\"",
            "\"per_sample\"",
            "the empirical Fisher's estimator"
        ]
    );
    let gamma = text
        .lines()
        .find(|l| l.trim_start().starts_with("gamma "))
        .unwrap();
    assert!(gamma.contains("(1.0 online"), "{gamma}");
    assert!(text.contains("name = \"ewc\"\n  lambda = 100.0"), "{text}");
    assert!(card(find("naive").unwrap()).contains("hyper-parameters: none"));
}
