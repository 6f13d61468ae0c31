use super::*;

const SPLIT_MNIST: &str = include_str!("../../../experiments/split-mnist.toml");

fn grid(table: &str) -> String {
    format!("{SPLIT_MNIST}\n[grid]\n{table}\n")
}

fn parse(table: &str) -> Result<GridSpec, GridError> {
    GridSpec::from_source(&grid(table), "g.toml")
}

fn ids(spec: &GridSpec) -> Vec<&str> {
    spec.cells.iter().map(|c| c.id.as_str()).collect()
}

#[test]
fn axes_expand_as_a_cartesian_product_first_axis_slowest() {
    let spec = parse(
        "\"seed\" = [0, 1, 2]\n\"method.name\" = [\"naive\", \"joint\"]\n\
         \"training.optimizer.lr\" = [0.01, 0.05]",
    )
    .unwrap();
    assert_eq!(spec.cells.len(), 3 * 2 * 2);
    // Axes sort by key: method.name, seed, training.optimizer.lr.
    assert_eq!(
        &ids(&spec)[..4],
        [
            "method=naive,seed=0,lr=0.01",
            "method=naive,seed=0,lr=0.05",
            "method=naive,seed=1,lr=0.01",
            "method=naive,seed=1,lr=0.05",
        ]
    );
    assert_eq!(ids(&spec)[11], "method=joint,seed=2,lr=0.05");
    let distinct: std::collections::BTreeSet<_> = ids(&spec).into_iter().collect();
    assert_eq!(distinct.len(), 12, "ids are unique");
    for (i, cell) in spec.cells.iter().enumerate() {
        assert_eq!(cell.index, i);
    }
    // The cell's experiment carries its values.
    let cell = spec.cell("method=joint,seed=2,lr=0.05").unwrap();
    let exp = spec.experiment(cell, &[]).unwrap();
    assert_eq!(exp.seed, 2);
    assert_eq!(exp.method.name, "joint");
    assert_eq!(
        exp.training.optimizer,
        retain_config::OptimizerConfig::Sgd {
            lr: 0.05,
            momentum: 0.0,
            weight_decay: 0.0
        }
    );
    assert_eq!(
        cell.overrides(),
        [
            "method.name=\"joint\"",
            "seed=2",
            "training.optimizer.lr=0.05"
        ]
    );
}

#[test]
fn ids_are_stable_across_parses_axis_order_and_appended_values() {
    let a = parse("\"seed\" = [0, 1]\n\"training.optimizer.lr\" = [0.01, 0.05]").unwrap();
    let again = parse("\"seed\" = [0, 1]\n\"training.optimizer.lr\" = [0.01, 0.05]").unwrap();
    assert_eq!(ids(&a), ids(&again));
    // Written in the other order, or nested instead of quoted: the same cells.
    let swapped = parse("training.optimizer.lr = [0.01, 0.05]\nseed = [0, 1]").unwrap();
    assert_eq!(ids(&a), ids(&swapped));
    // Appending a value to one axis keeps every existing id.
    let grown = parse("\"seed\" = [0, 1, 2]\n\"training.optimizer.lr\" = [0.01, 0.05]").unwrap();
    for id in ids(&a) {
        assert!(ids(&grown).contains(&id), "{id} lost");
    }
    assert_eq!(grown.cells.len(), 6);
}

#[test]
fn short_names_fall_back_to_full_keys_on_a_clash_and_values_are_sanitised() {
    let spec = parse(
        "\"training.optimizer.weight_decay\" = [0.0]\n\"method.weight_decay\" = [1e-4]\n\
         \"stream.class_order\" = [\"natural\", [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]",
    )
    .unwrap();
    assert_eq!(
        ids(&spec),
        [
            "method.weight_decay=0.0001,class_order=natural,training.optimizer.weight_decay=0.0",
            "method.weight_decay=0.0001,class_order=9-8-7-6-5-4-3-2-1-0,\
             training.optimizer.weight_decay=0.0",
        ]
    );
    assert_eq!(
        spec.cells[1].value_of("stream.class_order").unwrap(),
        "[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]"
    );
    // Huge floats keep their exponent in ids and overrides alike.
    let lr = parse("\"training.optimizer.lr\" = [1e30]").unwrap();
    assert_eq!(ids(&lr), ["lr=1e30"]);
    assert_eq!(lr.cells[0].overrides(), ["training.optimizer.lr=1e30"]);
}

#[test]
fn colliding_ids_are_an_error_naming_both_cells() {
    let err = parse("\"method.name\" = [\"a/b\", \"a b\"]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("a-b"), "{err}");
    assert!(err.contains("\"a/b\"") && err.contains("\"a b\""), "{err}");
}

#[test]
fn unknown_keys_are_rejected_naming_the_key() {
    let err = parse("\"seed\" = [0]\n\"training.optimizer.lrr\" = [0.1]")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("g.toml: grid axis `training.optimizer.lrr`"),
        "{err}"
    );
    assert!(err.contains("lrr"), "{err}");

    let err = parse("\"streem.tasks\" = [3]").unwrap_err().to_string();
    assert!(err.contains("grid axis `streem.tasks`"), "{err}");
    assert!(err.contains("unknown field `streem`"), "{err}");

    // A value of the wrong type is named with its key and value.
    let err = parse("\"stream.tasks\" = [3, \"many\"]")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("grid axis `stream.tasks`: value \"many\""),
        "{err}"
    );
    // A value the schema accepts but validation refuses.
    let err = parse("\"training.optimizer.lr\" = [0.1, -1.0]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("training.optimizer.lr"), "{err}");
    assert!(err.contains("-1"), "{err}");
}

#[test]
fn combinations_are_validated_per_cell() {
    // Each value is fine alone; 6 tasks × 2 classes needs 12 of MNIST's 10 classes.
    // Base: 2 tasks × 2 classes. Each value is fine alone; 4 tasks × 3 classes needs 12 of
    // MNIST's 10 classes.
    let text = grid("\"stream.tasks\" = [2, 4]\n\"stream.classes_per_task\" = [2, 3]")
        .replace("tasks = 5", "tasks = 2");
    let err = GridSpec::from_source(&text, "g.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "g.toml: cell `classes_per_task=3,tasks=4`: invalid value for `stream.tasks`"
        ),
        "{err}"
    );
    assert!(err.contains("need 12 classes"), "{err}");
}

#[test]
fn reserved_keys_malformed_axes_and_settings_are_rejected() {
    let err = parse("\"device\" = [\"cpu\"]").unwrap_err().to_string();
    assert!(
        err.contains("grid axis `device`: cannot be an axis"),
        "{err}"
    );
    let err = parse("\"seed\" = 3").unwrap_err().to_string();
    assert!(err.contains("an axis needs a list of values"), "{err}");
    let err = parse("\"seed\" = []").unwrap_err().to_string();
    assert!(err.contains("grid axis `seed`: has no values"), "{err}");
    let err = parse("runs_per_device = 0").unwrap_err().to_string();
    assert!(err.contains("`[grid]` setting `runs_per_device`"), "{err}");
    let err = parse("devices = \"gpu\"").unwrap_err().to_string();
    assert!(err.contains("`[grid]` setting `devices`"), "{err}");
    let err = GridSpec::from_source(SPLIT_MNIST, "g.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no `[grid]` table"), "{err}");
    let err = parse("\"seed\" = [0]\n\"seed\".x = [1]").unwrap_err();
    assert!(matches!(err, GridError::Parse { .. }), "{err}");
}

#[test]
fn errors_in_the_experiment_part_keep_their_line() {
    let text = grid("\"seed\" = [0]").replace("epochs = 1", "epochz = 1");
    let line = 1 + text.lines().position(|l| l.starts_with("epochz")).unwrap();
    let err = GridSpec::from_source(&text, "g.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("g.toml:{line}")), "{err}");
    assert!(err.contains("epochz"), "{err}");
}

#[test]
fn settings_published_and_defaults() {
    let text = format!(
        "{SPLIT_MNIST}\n[grid]\nruns_per_device = 4\ndevices = [\"cuda:0\", \"cuda:1\"]\n\
         \"seed\" = [0, 1]\n\n[published]\ncitation = \"Buzzega et al. 2020\"\n\
         \"naive.class_il.acc\" = 19.62\n\"er-ace.task_il.forgetting\" = 3\n"
    );
    let spec = GridSpec::from_source(&text, "g.toml").unwrap();
    assert_eq!(spec.settings.runs_per_device, 4);
    assert_eq!(
        spec.settings.devices,
        DeviceList::List(vec![DeviceSpec::Cuda(0), DeviceSpec::Cuda(1)])
    );
    assert_eq!(
        spec.published.citation.as_deref(),
        Some("Buzzega et al. 2020")
    );
    assert_eq!(spec.published.get("naive", "class_il", "acc"), Some(19.62));
    assert_eq!(
        spec.published.get("er-ace", "task_il", "forgetting"),
        Some(3.0)
    );
    assert_eq!(spec.published.get("naive", "task_il", "acc"), None);
    assert_eq!(ids(&spec), ["seed=0", "seed=1"]);
    assert_eq!(
        spec.cell_dir(&spec.cells[1]),
        Path::new("results/split-mnist/cells/seed=1")
    );

    let err = GridSpec::from_source(
        &format!("{SPLIT_MNIST}\n[grid]\nseed = [0]\n[published]\n\"naive.acc\" = 1.0\n"),
        "g.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`[published]` entry `naive.acc`"), "{err}");

    let plain = parse("").unwrap();
    assert_eq!(plain.settings, GridSettings::default());
    assert_eq!(ids(&plain), ["default"]);
}

#[test]
fn slots_interleave_devices() {
    let devices = vec!["cuda:0".to_owned(), "cuda:1".to_owned()];
    assert_eq!(slots(&devices, 2), ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]);
    assert_eq!(slots(&["cpu".to_owned()], 3), ["cpu", "cpu", "cpu"]);
}

#[test]
fn joint_partner_matches_every_non_method_axis() {
    let spec = parse(
        "\"seed\" = [0, 1]\n\"method.name\" = [\"naive\", \"joint\"]\n\
         \"training.optimizer.lr\" = [0.01, 0.05]",
    )
    .unwrap();
    let naive = spec.cell("method=naive,seed=1,lr=0.05").unwrap();
    assert_eq!(
        spec.joint_partner(naive).unwrap().id,
        "method=joint,seed=1,lr=0.05"
    );
    let joint = spec.cell("method=joint,seed=1,lr=0.05").unwrap();
    assert_eq!(spec.joint_partner(joint), None);
    let no_joint = parse("\"seed\" = [0, 1]").unwrap();
    assert_eq!(no_joint.joint_partner(&no_joint.cells[0]), None);
    assert_eq!(
        spec.cells[0].config_label(&spec.axes),
        "method=naive,lr=0.01"
    );
    assert_eq!(no_joint.cells[1].config_label(&no_joint.axes), "all");
}

#[test]
fn baselines_parse_from_toml_and_csv_and_compare_two_sided() {
    let toml_text = "[[metric]]\nmetric = \"acc\"\nmethod = \"naive\"\nscenario = \"class_il\"\n\
                     value = 33.0\ntolerance = 2.0\n\n[[metric]]\nmetric = \"bwt\"\n\
                     method = \"naive\"\nscenario = \"class_il\"\nvalue = -90.0\ntolerance = 5.0\n";
    let csv_text = "# comment\nmetric,method,scenario,value,tolerance\nacc,naive,class_il,33.0,2.0\n\
                    bwt, naive, class_il, -90, 5\n";
    let from_toml = parse_baseline(toml_text, "b.toml").unwrap();
    let from_csv = parse_baseline(csv_text, "b.CSV").unwrap();
    assert_eq!(from_toml, from_csv);

    let results = compare(&from_toml, |metric, method, scenario| {
        assert_eq!((method, scenario), ("naive", "class_il"));
        match metric {
            "acc" => Some(35.0),
            _ => Some(-96.0),
        }
    });
    // ACC moved by exactly the tolerance: passes; BWT moved by 6 > 5: fails.
    assert_eq!(results[0].delta(), Some(2.0));
    assert!(results[0].passed());
    assert_eq!(results[1].delta(), Some(-6.0));
    assert!(!results[1].passed());
    // A metric that cannot be observed fails.
    let missing = compare(&from_toml, |_, _, _| None);
    assert!(missing.iter().all(|c| !c.passed() && c.delta().is_none()));

    let err = parse_baseline("metric,method\nacc,naive\n", "b.csv")
        .unwrap_err()
        .to_string();
    assert!(err.contains("b.csv") && err.contains("header"), "{err}");
    let err = parse_baseline(
        "metric,method,scenario,value,tolerance\nacc,naive,class_il,x,1\n",
        "b.csv",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2") && err.contains("`x`"), "{err}");
    let err = parse_baseline(
        "metric,method,scenario,value,tolerance\naccuracy,naive,class_il,1,1\n",
        "b.csv",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown metric `accuracy`"), "{err}");
    assert!(parse_baseline("", "b.json").is_err());
}

/// Every grid file shipped in `experiments/` expands, so a broken grid is caught here rather
/// than when someone starts it.
#[test]
fn every_shipped_grid_file_expands() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut grids = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.extension().is_some_and(|e| e == "toml") && text.contains("\n[grid]") {
            let spec = GridSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                spec.cells.len() > 1,
                "{}: a grid of one cell",
                path.display()
            );
            grids += 1;
        }
    }
    assert!(grids >= 2, "expected the shipped grid files, found {grids}");
}

/// A `method` axis of whole tables compares methods with hyper-parameters of their own.
#[test]
fn a_method_axis_of_tables_names_cells_by_method_and_parameters() {
    let spec = parse(
        "\"method\" = [{ name = \"naive\" }, { name = \"lora\", rank = 4, alpha = 8.0 }]\n\
         \"seed\" = [0, 1]",
    )
    .unwrap();
    assert_eq!(
        ids(&spec),
        [
            "method=naive,seed=0",
            "method=naive,seed=1",
            "method=lora+alpha-8.0+rank-4,seed=0",
            "method=lora+alpha-8.0+rank-4,seed=1",
        ]
    );
    let cell = spec.cell("method=lora+alpha-8.0+rank-4,seed=1").unwrap();
    assert_eq!(spec.method_of(cell), "lora");
    let exp = spec.experiment(cell, &[]).unwrap();
    assert_eq!(exp.method.name, "lora");
    assert_eq!(exp.method.params["rank"].as_integer(), Some(4));
    assert_eq!(
        cell.config_label(&spec.axes),
        "method=lora+alpha-8.0+rank-4"
    );
}

#[test]
fn joint_partner_pairs_cells_of_a_method_table_axis() {
    // An axis of whole `[method]` tables: the pairing must ignore it like `method.*` keys.
    let spec =
        parse("\"seed\" = [0, 1]\n\"method\" = [{ name = \"naive\" }, { name = \"joint\" }]")
            .unwrap();
    let cell = |method: &str, seed: i64| {
        spec.cells
            .iter()
            .find(|c| {
                spec.method_of(c) == method
                    && c.assignments
                        .iter()
                        .any(|(k, v)| k == "seed" && v.as_integer() == Some(seed))
            })
            .unwrap()
    };
    for seed in [0, 1] {
        assert_eq!(
            spec.joint_partner(cell("naive", seed)).unwrap().id,
            cell("joint", seed).id
        );
        assert_eq!(spec.joint_partner(cell("joint", seed)), None);
    }
}

#[test]
fn a_with_axis_applies_each_table_of_overrides_together() {
    let spec = parse(
        "\"seed\" = [0, 1]\nwith = [\n\
         { \"method.name\" = \"der\", \"method.alpha\" = 0.3, \"training.optimizer.lr\" = 0.03 },\n\
         { method = { name = \"replay\", buffer_size = 200 }, training.optimizer.lr = 0.1 },\n\
         { \"method.name\" = \"joint\" },\n]",
    )
    .unwrap();
    // Two seeds × three tables, not two × the product of the tables' keys.
    assert_eq!(spec.cells.len(), 6);
    assert_eq!(
        ids(&spec)[..3],
        [
            "seed=0,with=der+alpha-0.3+lr-0.03",
            "seed=0,with=replay+buffer_size-200+lr-0.1",
            "seed=0,with=joint",
        ]
    );
    // Nested tables set their leaves, as dotted keys do.
    assert_eq!(
        spec.cells[1].overrides(),
        [
            "seed=0",
            "method.buffer_size=200",
            "method.name=\"replay\"",
            "training.optimizer.lr=0.1",
        ]
    );
    let der = spec.experiment(&spec.cells[0], &[]).unwrap();
    assert_eq!(der.method.name, "der");
    assert_eq!(der.method.params["alpha"].as_float(), Some(0.3));
    assert_eq!(spec.method_of(&spec.cells[0]), "der");
    assert_eq!(
        spec.cells[0].value_of("training.optimizer.lr").unwrap(),
        "0.03"
    );
    // The joint partner agrees on the seed; the `with` axis chooses the method.
    assert_eq!(
        spec.joint_partner(&spec.cells[1]).unwrap().id,
        "seed=0,with=joint"
    );
    // A value that is not a table, an empty table, and a bad key inside one are refused,
    // naming the axis.
    for (table, expected) in [
        ("with = [0.1]", "each value is a table of overrides"),
        ("with = [{}]", "an empty table sets nothing"),
        (
            "with = [{ \"training.optimizer.lr\" = \"fast\" }]",
            "training.optimizer.lr",
        ),
    ] {
        let error = parse(table).unwrap_err().to_string();
        assert!(
            error.contains("with") && error.contains(expected),
            "{table}: {error}"
        );
    }
}
