//! The SET list of a partial update (PATCH): `column = $n` for each field the request
//! carries, with its parameter. Column names and casts are the handler's own constants,
//! never input.

use poem_openapi::types::MaybeUndefined;
use tokio_postgres::types::ToSql;

type Param = Box<dyn ToSql + Sync + Send>;

#[derive(Default)]
pub struct Changes {
    pub sets: Vec<String>,
    params: Vec<Param>,
}

impl Changes {
    /// Starts with `first` as `$1` (the row's id, say) and no change.
    pub fn new(first: Param) -> Self {
        Self {
            sets: Vec::new(),
            params: vec![first],
        }
    }

    /// `column = $n<cast>`: `cast` (e.g. `::jsonb`, or empty) converts the parameter's
    /// Rust type to the column's.
    pub fn set(&mut self, column: &str, cast: &str, value: Param) {
        self.params.push(value);
        self.sets
            .push(format!("{column} = ${}{cast}", self.params.len()));
    }

    /// Absent: unchanged; `null`: cleared; a value: set.
    pub fn maybe<T: Clone + ToSql + Sync + Send + 'static>(
        &mut self,
        column: &str,
        cast: &str,
        value: &MaybeUndefined<T>,
    ) {
        match value {
            MaybeUndefined::Undefined => {}
            MaybeUndefined::Null => self.set(column, cast, Box::new(None::<T>)),
            MaybeUndefined::Value(v) => self.set(column, cast, Box::new(Some(v.clone()))),
        }
    }

    /// Absent: unchanged; a value: set (for columns that are never NULL).
    pub fn some<T: ToSql + Sync + Send + 'static>(
        &mut self,
        column: &str,
        cast: &str,
        value: Option<T>,
    ) {
        if let Some(v) = value {
            self.set(column, cast, Box::new(v));
        }
    }

    /// The parameters, as a statement takes them.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| &**p as &(dyn ToSql + Sync))
            .collect()
    }
}
