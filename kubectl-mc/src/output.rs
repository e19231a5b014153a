//! `-o table|json|yaml` for commands whose output is data.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::OutputFormat;

/// Rows under headers, printed with aligned columns like kubectl.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<&'static str>,
    /// One entry per row, one cell per header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Renders the table; three spaces between columns.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad + 3));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        out
    }
}

/// Renders `data` as JSON or YAML, or `table` for the table format.
pub fn render<T: Serialize>(format: OutputFormat, table: &Table, data: &T) -> Result<String> {
    match format {
        OutputFormat::Table => Ok(table.render()),
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(data).context("rendering JSON")?;
            text.push('\n');
            Ok(text)
        }
        OutputFormat::Yaml => serde_yaml::to_string(data).context("rendering YAML"),
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn columns_are_aligned() {
        let table = Table {
            headers: vec!["CLUSTER", "ALIVE"],
            rows: vec![
                vec!["east".into(), "True".into()],
                vec!["far-away".into(), "False".into()],
            ],
        };
        assert_eq!(
            table.render(),
            "CLUSTER    ALIVE\neast       True\nfar-away   False\n"
        );
    }
}
