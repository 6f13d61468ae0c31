//! Tests of the column derivation itself, on a record with a field of every codec.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use super::*;
use crate::parquet;

record! {
    /// A record with a field of every codec.
    #[derive(Debug, Clone, PartialEq)]
    struct Probe {
        name: String,
        tags: Vec<(String, String)> => Axes { prefix: "tag." },
        count: u32,
        inner: Inner => Flatten,
        score: Option<f64>,
        extra: Option<Extra> => Group { present_if: "weight" },
        note: Option<String> => AddedLater,
    }
    check = |rows| {
        if rows.iter().any(|r| r.name.is_empty()) {
            return Err(ResultsError::InvalidCounts("empty name".into()));
        }
        Ok(())
    };
}

record! {
    #[derive(Debug, Clone, PartialEq)]
    struct Inner {
        depth: u64,
    }
}

record! {
    #[derive(Debug, Clone, PartialEq)]
    struct Extra {
        weight: u64,
        label: String,
    }
}

fn probe(name: &str, weight: Option<u64>) -> Probe {
    Probe {
        name: name.into(),
        tags: vec![("a".into(), format!("{name}-a")), ("b".into(), "x".into())],
        count: 3,
        inner: Inner { depth: 7 },
        score: weight.map(|w| w as f64 / 2.0),
        extra: weight.map(|weight| Extra {
            weight,
            label: format!("{name}-extra"),
        }),
        note: weight.is_none().then(|| "none".into()),
    }
}

fn frame(path: &Path) -> DataFrame {
    parquet::read_frame(path).unwrap()
}

fn write_raw(path: &Path, mut df: DataFrame) {
    ParquetWriter::new(File::create(path).unwrap())
        .finish(&mut df)
        .unwrap();
}

/// Columns follow the declaration, one block per field in field order, and every codec reads
/// back what it wrote, nulls included.
#[test]
fn columns_follow_the_declaration_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.parquet");
    let rows = vec![probe("p", Some(2)), probe("q", None)];
    parquet::write(&path, &rows).unwrap();
    let schema: Vec<(String, DataType)> = frame(&path)
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().clone()))
        .collect();
    let s = |n: &str, t: DataType| (n.to_string(), t);
    assert_eq!(
        schema,
        [
            s("name", DataType::String),
            s("tag.a", DataType::String),
            s("tag.b", DataType::String),
            s("count", DataType::UInt32),
            s("depth", DataType::UInt64),
            s("score", DataType::Float64),
            s("weight", DataType::UInt64),
            s("label", DataType::String),
            s("note", DataType::String),
        ]
    );
    assert_eq!(parquet::read::<Probe>(&path).unwrap(), rows);
    assert!(parquet::read::<Probe>(&dir.path().join("empty.parquet")).is_err());
    parquet::write::<Probe>(&dir.path().join("empty.parquet"), &[]).unwrap();
    assert!(
        parquet::read::<Probe>(&dir.path().join("empty.parquet"))
            .unwrap()
            .is_empty()
    );
}

/// A group is `None` where any of its values is null and everywhere without its marker
/// column; a column added later is `None` where absent; a required null is an error.
#[test]
fn groups_late_columns_and_required_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.parquet");
    parquet::write(&path, &[probe("p", Some(2)), probe("q", Some(4))]).unwrap();

    let mut df = frame(&path);
    df.replace(
        "label",
        Column::new("label".into(), [Some("kept"), None::<&str>]),
    )
    .unwrap();
    write_raw(&path, df);
    let rows = parquet::read::<Probe>(&path).unwrap();
    assert_eq!(rows[0].extra.as_ref().unwrap().label, "kept");
    assert_eq!(rows[1].extra, None, "one null makes the whole group absent");

    let old = frame(&path).drop("weight").unwrap().drop("note").unwrap();
    write_raw(&path, old);
    let rows = parquet::read::<Probe>(&path).unwrap();
    assert!(rows.iter().all(|r| r.extra.is_none() && r.note.is_none()));

    let mut df = frame(&path);
    df.replace("count", Column::new("count".into(), [Some(1u32), None]))
        .unwrap();
    write_raw(&path, df);
    assert!(matches!(
        parquet::read::<Probe>(&path),
        Err(ResultsError::UnexpectedNull {
            column: "count",
            row: 1,
            ..
        })
    ));
}

/// The record's check runs before anything is written, and a flattened record's own columns
/// are checked after the outer record's.
#[test]
fn check_runs_first_and_own_columns_are_checked_before_inherited_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.parquet");
    let err = parquet::write(&path, &[probe("", None)]).unwrap_err();
    assert!(matches!(err, ResultsError::InvalidCounts(_)), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    parquet::write(&path, &[probe("p", None)]).unwrap();
    let broken = frame(&path).drop("depth").unwrap().drop("score").unwrap();
    write_raw(&path, broken);
    // `depth` comes first in the file, but it is inherited (from `Inner`), so the outer
    // record's own `score` is reported.
    let err = parquet::read::<Probe>(&path).unwrap_err();
    assert!(
        matches!(
            err,
            ResultsError::MissingColumn {
                column: "score",
                ..
            }
        ),
        "{err}"
    );
}
