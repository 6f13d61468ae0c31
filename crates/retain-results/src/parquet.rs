//! Parquet I/O: records to a zstd Parquet file through the workspace's atomic writer
//! (`retain-fs`), and back through a reader that checks every column's presence and type.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use retain_fs::AtomicError;

use crate::ResultsError;
use crate::columns::{Nulls, Record};

/// Writes `rows` to `path` atomically: the frame is built (and the rows checked) first, then
/// serialised into a temporary sibling that `retain-fs` flushes and renames into place.
pub(crate) fn write<R: Record>(path: &Path, rows: &[R]) -> Result<(), ResultsError> {
    let parquet_err = |source| ResultsError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let io_err = |source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let rows: Vec<Option<&R>> = rows.iter().map(Some).collect();
    let mut columns = Vec::new();
    R::write_columns(&rows, &mut columns)?;
    let mut df = DataFrame::new(rows.len(), columns).map_err(parquet_err)?;
    retain_fs::write_atomically_with(path, |temporary| {
        // `File::create` gives the file the user's ordinary mode (0o666 less the umask).
        let file = File::create(temporary).map_err(io_err)?;
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut df)
            .map_err(parquet_err)?;
        Ok(())
    })
    .map_err(|e| match e {
        AtomicError::Writer(e) => e,
        // Errors name the destination, as they always have; the temporary name means nothing
        // to the user.
        AtomicError::Write(e) => io_err(e.source),
    })
}

/// Reads every row of `path`, checking the schema first.
pub(crate) fn read<R: Record>(path: &Path) -> Result<Vec<R>, ResultsError> {
    let df = read_frame(path)?;
    let rows = R::read_rows(&Reader { df: &df, path }, Nulls::Reject)?;
    Ok(rows
        .into_iter()
        .map(|r| r.expect("rejecting nulls yields every row"))
        .collect())
}

pub(crate) fn read_frame(path: &Path) -> Result<DataFrame, ResultsError> {
    let file = File::open(path).map_err(|source| ResultsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetReader::new(file)
        .finish()
        .map_err(|source| ResultsError::Parquet {
            path: path.to_path_buf(),
            source,
        })
}

/// Typed, schema-checked column access with errors that name the file and the column.
pub(crate) struct Reader<'a> {
    df: &'a DataFrame,
    path: &'a Path,
}

impl Reader<'_> {
    /// Rows in the file.
    pub(crate) fn height(&self) -> usize {
        self.df.height()
    }

    /// Whether the file has a column `name` (of any type).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.df.column(name).is_ok()
    }

    /// Every column, in file order.
    pub(crate) fn columns(&self) -> &[Column] {
        self.df.columns()
    }

    /// Column `name`, which must be present with type `dtype` (`expected` in errors).
    pub(crate) fn column(
        &self,
        name: &'static str,
        dtype: DataType,
        expected: &'static str,
    ) -> Result<&Column, ResultsError> {
        let column = self
            .df
            .column(name)
            .map_err(|_| ResultsError::MissingColumn {
                path: self.path.to_path_buf(),
                column: name,
                expected,
            })?;
        if column.dtype() != &dtype {
            return Err(ResultsError::WrongColumnType {
                path: self.path.to_path_buf(),
                column: name,
                expected,
                found: column.dtype().to_string(),
            });
        }
        Ok(column)
    }

    pub(crate) fn polars(&self, source: PolarsError) -> ResultsError {
        ResultsError::Parquet {
            path: self.path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn unexpected_null(&self, column: &'static str, row: usize) -> ResultsError {
        ResultsError::UnexpectedNull {
            path: self.path.to_path_buf(),
            column,
            row,
        }
    }
}
