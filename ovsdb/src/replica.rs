//! The local replica of the monitored rows: `<table-updates>` in, rows
//! out, and readers for OVSDB's value encodings. Pure code.

use crate::Error;
use serde_json::Value;
use std::collections::HashMap;

/// One row: column name -> OVSDB value.
pub type Row = serde_json::Map<String, Value>;

/// Rows of the monitored tables, by uuid: column name -> OVSDB value.
#[derive(Debug, Default, Clone)]
pub struct Replica {
    tables: HashMap<String, HashMap<String, serde_json::Map<String, Value>>>,
}

impl Replica {
    /// Applies a `<table-updates>` object (initial monitor reply or an
    /// `update` notification).
    pub fn apply(&mut self, updates: &Value) -> Result<(), Error> {
        let updates = updates
            .as_object()
            .ok_or_else(|| Error::Protocol("table-updates is not an object".into()))?;
        for (table, rows) in updates {
            let rows = rows
                .as_object()
                .ok_or_else(|| Error::Protocol(format!("{table}: rows not an object")))?;
            let replica = self.tables.entry(table.clone()).or_default();
            for (uuid, change) in rows {
                match change.get("new").and_then(Value::as_object) {
                    Some(new) => {
                        let row = replica.entry(uuid.clone()).or_default();
                        for (column, value) in new {
                            row.insert(column.clone(), value.clone());
                        }
                    }
                    None => {
                        replica.remove(uuid);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every row of `table`: (uuid, columns).
    pub fn rows(
        &self,
        table: &str,
    ) -> impl Iterator<Item = (&String, &serde_json::Map<String, Value>)> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|rows| rows.iter())
    }

    /// The row of `table` with this uuid.
    pub fn row(&self, table: &str, uuid: &str) -> Option<&serde_json::Map<String, Value>> {
        self.tables.get(table)?.get(uuid)
    }
}

/// The value of `key` in an OVSDB map column (`["map", [[k, v], ...]]`).
pub fn map_value(value: Option<&Value>, key: &str) -> Option<String> {
    value?
        .as_array()
        .filter(|a| a.first().and_then(Value::as_str) == Some("map"))?
        .get(1)?
        .as_array()?
        .iter()
        .find_map(|pair| {
            let pair = pair.as_array()?;
            (pair.first()?.as_str()? == key).then(|| pair.get(1)?.as_str().map(str::to_string))?
        })
}

/// The strings in an OVSDB string or `["set", [s, ...]]` (an optional
/// column that is empty is `["set", []]`).
pub fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(parts)) if parts.first().and_then(Value::as_str) == Some("set") => parts
            .get(1)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The uuids in an OVSDB `["uuid", u]` or `["set", [["uuid", u], ...]]`.
pub fn uuids(value: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(parts)) = value else {
        return Vec::new();
    };
    match (parts.first().and_then(Value::as_str), parts.get(1)) {
        (Some("uuid"), Some(Value::String(u))) => vec![u.clone()],
        (Some("set"), Some(Value::Array(items))) => {
            items.iter().flat_map(|i| uuids(Some(i))).collect()
        }
        _ => Vec::new(),
    }
}
