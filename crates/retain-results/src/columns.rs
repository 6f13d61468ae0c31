//! Parquet columns derived from record types: [`record!`] declares a record once, and its
//! columns (names, types, order), frame builder and row reader follow from its fields.
//!
//! Every field maps to columns through a [`Codec`]. The default, [`Plain`], is one column named
//! after the field whose type follows from the field's Rust type (`u64` → UInt64, `Option<f64>`
//! → nullable Float64). A field whose columns are laid out another way names its codec after an
//! arrow: [`AddedLater`], [`Group`], [`Flatten`], [`Axes`]. Adding a column to a file is thus
//! one line in its record's declaration, in the place the column takes in the file.
//!
//! ```text
//! record! {
//!     #[derive(Debug, Clone, PartialEq)]
//!     pub struct MetricsRecord {
//!         pub run: String,                       // String, not nullable
//!         pub bwt: Option<f64>,                  // Float64, nullable
//!         pub costs: Option<RunCosts> => Group { present_if: "method_state_bytes" },
//!         pub training_loss: Option<String> => AddedLater,
//!     }
//!     check = |rows| each_scenario(rows, |r| r.scenario.as_str());
//! }
//! ```

use polars::prelude::*;

use crate::ResultsError;
use crate::parquet::Reader;

/// A scalar that one column holds, with the type readers insist on.
pub(crate) trait Value: Sized {
    /// The type as errors and the crate docs name it (`UInt64`).
    const TYPE: &'static str;

    fn dtype() -> DataType;

    /// A column holding `values`, null where `None`.
    fn column(name: &str, values: Vec<Option<&Self>>) -> Column;

    /// The entries of a column already checked to have [`Value::dtype`].
    fn entries(column: &Column) -> PolarsResult<Vec<Option<Self>>>;
}

impl Value for String {
    const TYPE: &'static str = "String";

    fn dtype() -> DataType {
        DataType::String
    }

    fn column(name: &str, values: Vec<Option<&Self>>) -> Column {
        let values: Vec<Option<&str>> = values.into_iter().map(|v| v.map(String::as_str)).collect();
        Column::new(name.into(), values)
    }

    fn entries(column: &Column) -> PolarsResult<Vec<Option<Self>>> {
        Ok(column.str()?.iter().map(|v| v.map(str::to_owned)).collect())
    }
}

/// [`Value`] for the numeric types: `rust type => polars DataType, Column accessor`.
macro_rules! numeric_values {
    ($($rust:ty => $dtype:ident, $access:ident;)*) => {$(
        impl Value for $rust {
            const TYPE: &'static str = stringify!($dtype);

            fn dtype() -> DataType {
                DataType::$dtype
            }

            fn column(name: &str, values: Vec<Option<&Self>>) -> Column {
                let values: Vec<Option<$rust>> = values.into_iter().map(|v| v.copied()).collect();
                Column::new(name.into(), values)
            }

            fn entries(column: &Column) -> PolarsResult<Vec<Option<Self>>> {
                Ok(column.$access()?.iter().collect())
            }
        }
    )*};
}

numeric_values! {
    u32 => UInt32, u32;
    u64 => UInt64, u64;
    f64 => Float64, f64;
}

/// What a [`Plain`] field holds: a required value (`u64`, a non-nullable column) or an optional
/// one (`Option<u64>`, a nullable column).
pub(crate) trait Cell: Sized {
    type Value: Value;

    fn value(&self) -> Option<&Self::Value>;

    /// The field from a column entry; `None` when the entry is null but a value is required.
    fn from_entry(entry: Option<Self::Value>) -> Option<Self>;
}

impl<V: Value> Cell for V {
    type Value = V;

    fn value(&self) -> Option<&V> {
        Some(self)
    }

    fn from_entry(entry: Option<V>) -> Option<V> {
        entry
    }
}

impl<V: Value> Cell for Option<V> {
    type Value = V;

    fn value(&self) -> Option<&V> {
        self.as_ref()
    }

    fn from_entry(entry: Option<V>) -> Option<Self> {
        Some(entry)
    }
}

/// What a null in a required value means while reading.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nulls {
    /// An error naming the column and the row: the file breaks its schema.
    Reject,
    /// The row has no record: a [`Group`] (a run's costs) that was not recorded.
    Absent,
}

/// How one field of type `T` is stored: which columns it writes and how it reads them back.
pub(crate) trait Codec<T> {
    /// Appends the field's columns for `rows`; a `None` row (an absent [`Group`]) is written as
    /// nulls.
    fn write(
        &self,
        name: &'static str,
        rows: &[Option<&T>],
        out: &mut Vec<Column>,
    ) -> Result<(), ResultsError>;

    /// The field's value in every row of the file, `None` where [`Nulls::Absent`] found a null
    /// in a required value (under [`Nulls::Reject`] every row is `Some`).
    fn read(
        &self,
        reader: &Reader<'_>,
        name: &'static str,
        nulls: Nulls,
    ) -> Result<Vec<Option<T>>, ResultsError>;

    /// Whether the columns belong to another record ([`Flatten`]). A record's own columns are
    /// checked first, so a run file read as a grid file names the grid column it lacks.
    fn inherited(&self) -> bool {
        false
    }
}

/// One column named after the field, of the field's type; nullable for an `Option` field.
pub(crate) struct Plain;

impl<C: Cell> Codec<C> for Plain {
    fn write(
        &self,
        name: &'static str,
        rows: &[Option<&C>],
        out: &mut Vec<Column>,
    ) -> Result<(), ResultsError> {
        let values = rows.iter().map(|r| r.and_then(C::value)).collect();
        out.push(C::Value::column(name, values));
        Ok(())
    }

    fn read(
        &self,
        reader: &Reader<'_>,
        name: &'static str,
        nulls: Nulls,
    ) -> Result<Vec<Option<C>>, ResultsError> {
        let column = reader.column(name, C::Value::dtype(), C::Value::TYPE)?;
        let entries = C::Value::entries(column).map_err(|e| reader.polars(e))?;
        entries
            .into_iter()
            .enumerate()
            .map(|(row, entry)| match C::from_entry(entry) {
                None if nulls == Nulls::Reject => Err(reader.unexpected_null(name, row)),
                cell => Ok(cell),
            })
            .collect()
    }
}

/// A nullable [`Plain`] column that files written before it existed lack: they read as `None`.
pub(crate) struct AddedLater;

impl<V: Value> Codec<Option<V>> for AddedLater {
    fn write(
        &self,
        name: &'static str,
        rows: &[Option<&Option<V>>],
        out: &mut Vec<Column>,
    ) -> Result<(), ResultsError> {
        Plain.write(name, rows, out)
    }

    fn read(
        &self,
        reader: &Reader<'_>,
        name: &'static str,
        nulls: Nulls,
    ) -> Result<Vec<Option<Option<V>>>, ResultsError> {
        if reader.has(name) {
            Plain.read(reader, name, nulls)
        } else {
            Ok((0..reader.height()).map(|_| Some(None)).collect())
        }
    }
}

/// An optional record stored in place as nullable columns, its own fields' names. A row reads
/// as `None` where any of them is null, and every row does in a file without the `present_if`
/// column (written before the group existed).
pub(crate) struct Group {
    pub present_if: &'static str,
}

impl<G: Record> Codec<Option<G>> for Group {
    fn write(
        &self,
        _name: &'static str,
        rows: &[Option<&Option<G>>],
        out: &mut Vec<Column>,
    ) -> Result<(), ResultsError> {
        let groups: Vec<Option<&G>> = rows.iter().map(|r| r.and_then(Option::as_ref)).collect();
        G::write_columns(&groups, out)
    }

    fn read(
        &self,
        reader: &Reader<'_>,
        _name: &'static str,
        _nulls: Nulls,
    ) -> Result<Vec<Option<Option<G>>>, ResultsError> {
        if !reader.has(self.present_if) {
            return Ok((0..reader.height()).map(|_| Some(None)).collect());
        }
        let groups = G::read_rows(reader, Nulls::Absent)?;
        Ok(groups.into_iter().map(Some).collect())
    }
}

/// Another record's columns, inline: a grid row is a run row with the cell in front.
pub(crate) struct Flatten;

impl<G: Record> Codec<G> for Flatten {
    fn write(
        &self,
        _name: &'static str,
        rows: &[Option<&G>],
        out: &mut Vec<Column>,
    ) -> Result<(), ResultsError> {
        G::write_columns(rows, out)
    }

    fn read(
        &self,
        reader: &Reader<'_>,
        _name: &'static str,
        nulls: Nulls,
    ) -> Result<Vec<Option<G>>, ResultsError> {
        G::read_rows(reader, nulls)
    }

    fn inherited(&self) -> bool {
        true
    }
}

/// `(key, value)` pairs as one String column per key, named `prefix` + key, in the first row's
/// key order (the record's check makes every row list the same keys). Reading takes every
/// column that starts with the prefix, in file order; a null reads as an empty value.
pub(crate) struct Axes {
    pub prefix: &'static str,
}

impl Codec<Vec<(String, String)>> for Axes {
    fn write(
        &self,
        _name: &'static str,
        rows: &[Option<&Vec<(String, String)>>],
        out: &mut Vec<Column>,
    ) -> Result<(), ResultsError> {
        let Some(first) = rows.iter().flatten().next() else {
            return Ok(());
        };
        for (i, (key, _)) in first.iter().enumerate() {
            let values = rows.iter().map(|r| r.map(|axes| &axes[i].1)).collect();
            out.push(String::column(&format!("{}{key}", self.prefix), values));
        }
        Ok(())
    }

    fn read(
        &self,
        reader: &Reader<'_>,
        _name: &'static str,
        _nulls: Nulls,
    ) -> Result<Vec<Option<Vec<(String, String)>>>, ResultsError> {
        let mut axes = vec![Vec::new(); reader.height()];
        for column in reader.columns() {
            if let Some(key) = column.name().strip_prefix(self.prefix) {
                let values = column.str().map_err(|e| reader.polars(e))?;
                for (row, value) in axes.iter_mut().zip(values.iter()) {
                    row.push((key.to_owned(), value.unwrap_or_default().to_owned()));
                }
            }
        }
        Ok(axes.into_iter().map(Some).collect())
    }
}

/// A record type stored as a block of columns; implemented by [`record!`].
pub(crate) trait Record: Sized {
    /// Checks `rows` (the record's `check`, then those of nested records) and appends their
    /// columns in file order; a `None` row is written as nulls.
    fn write_columns(rows: &[Option<&Self>], out: &mut Vec<Column>) -> Result<(), ResultsError>;

    /// Every row of the file; `None` only under [`Nulls::Absent`].
    fn read_rows(reader: &Reader<'_>, nulls: Nulls) -> Result<Vec<Option<Self>>, ResultsError>;
}

/// Declares a record struct and derives its [`Record`] implementation from its fields.
///
/// Each field is `name: Type`, optionally followed by `=> codec` (an expression of a type that
/// implements [`Codec`] for `Type`; [`Plain`] when omitted). An optional trailing
/// `check = expr;` (a `fn(&[&Self]) -> Result<(), ResultsError>`) rejects rows before any
/// column is built. See the module docs for an example.
macro_rules! record {
    (@codec) => { $crate::columns::Plain };
    (@codec $codec:expr) => { $codec };
    (@check) => { |_| Ok(()) };
    (@check $check:expr) => { $check };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident: $ty:ty $(=> $codec:expr)?
            ),* $(,)?
        }
        $(check = $check:expr;)?
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty,)*
        }

        impl $crate::columns::Record for $name {
            fn write_columns(
                rows: &[Option<&Self>],
                out: &mut Vec<::polars::prelude::Column>,
            ) -> Result<(), $crate::ResultsError> {
                let check: fn(&[&Self]) -> Result<(), $crate::ResultsError> =
                    $crate::columns::record!(@check $($check)?);
                check(&rows.iter().flatten().copied().collect::<Vec<_>>())?;
                $(
                    $crate::columns::Codec::<$ty>::write(
                        &$crate::columns::record!(@codec $($codec)?),
                        stringify!($field),
                        &rows.iter().map(|r| r.map(|r| &r.$field)).collect::<Vec<_>>(),
                        out,
                    )?;
                )*
                Ok(())
            }

            fn read_rows(
                reader: &$crate::parquet::Reader<'_>,
                nulls: $crate::columns::Nulls,
            ) -> Result<Vec<Option<Self>>, $crate::ResultsError> {
                // The record's own columns first, then inherited ones (see `Codec::inherited`);
                // each field is read in exactly one of the two passes.
                $(let mut $field = None;)*
                for inherited in [false, true] {
                    $(
                        let codec = $crate::columns::record!(@codec $($codec)?);
                        if $crate::columns::Codec::<$ty>::inherited(&codec) == inherited {
                            $field = Some(
                                $crate::columns::Codec::<$ty>::read(
                                    &codec,
                                    reader,
                                    stringify!($field),
                                    nulls,
                                )?
                                .into_iter(),
                            );
                        }
                    )*
                }
                $(let mut $field = $field.expect("every field is read in one pass");)*
                Ok((0..reader.height())
                    .map(|_| {
                        // Advance every column before `?` can leave a row early.
                        $(let $field = $field.next().expect("one entry per row");)*
                        Some(Self { $($field: $field?,)* })
                    })
                    .collect())
            }
        }
    };
}

pub(crate) use record;

#[cfg(test)]
mod tests;
