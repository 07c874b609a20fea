//! Where a scenario's texts come from: files read within a size bound, and texts (the scenario,
//! embedded manifests, manifest and Canary files) whose errors point at their own lines.

use std::io::Read;
use std::path::Path;

use fledge_controller::spec::LoadError;

use super::ScenarioError;
use crate::manifest::yaml::Outline;

/// The largest scenario, manifest or Canary file read: far above any real one, and a bound on
/// the memory a wrong path (`/dev/zero`, a log file) can take.
pub(crate) const MAX_FILE_BYTES: u64 = 4 << 20;

/// A file's text, read no further than [`MAX_FILE_BYTES`], without the byte order mark some
/// editors write first (it is no part of the YAML, and lines and columns are counted as if it
/// were not there); the error says what went wrong (the caller names the file).
pub(crate) fn read_bounded(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| io_message(&e))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_message(&e))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "larger than {} MiB, the most a scenario, manifest or Canary file may hold",
            MAX_FILE_BYTES >> 20
        ));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// `No such file or directory`, without the ` (os error 2)` a user has no use for.
fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_string(),
        _ => text,
    }
}

/// A text with no YAML in it: blank lines, comments and document markers only.
pub(crate) fn is_empty(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

/// Where an error of the Canary loader points in the text it read: the 0-based document, the
/// field path (empty for the whole document) and the 1-based line when the parser knows it.
pub(crate) fn load_error_place(e: &LoadError) -> (usize, &str, Option<usize>) {
    match e {
        LoadError::Yaml { document, line, .. } => (document.saturating_sub(1), "", *line),
        LoadError::Field { document, path, .. } => (document.saturating_sub(1), path, None),
        LoadError::Invalid {
            document, errors, ..
        } => (
            document.saturating_sub(1),
            errors.0.first().map_or("", |e| e.path.as_str()),
            None,
        ),
        LoadError::ApiVersion { document, .. } => (document.saturating_sub(1), "apiVersion", None),
    }
}

/// A YAML text inside a scenario or beside it, and where it was written.
pub(super) struct Source<'t> {
    /// The file errors name.
    pub(super) file: String,
    /// The scenario field it came from (`manifests`, `manifest_files[1]`).
    pub(super) field: String,
    pub(super) text: &'t str,
    /// The line of `file` that holds the text's first line.
    pub(super) first_line: usize,
    pub(super) outline: Outline,
}

impl<'t> Source<'t> {
    pub(super) fn new(file: String, field: String, text: &'t str, first_line: usize) -> Self {
        Source {
            file,
            field,
            text,
            first_line,
            outline: Outline::of(text),
        }
    }

    /// An error at a 1-based line of the text (or at its start).
    pub(super) fn error(&self, line: Option<usize>, message: String) -> ScenarioError {
        ScenarioError {
            file: self.file.clone(),
            line: Some(self.first_line + line.unwrap_or(1) - 1),
            field: self.field.clone(),
            message,
        }
    }

    /// The line of the first mention of `needle` from where `path` (or its nearest ancestor)
    /// is written to the end of document `doc`, or that line itself. Without a document, the
    /// first mention in the text.
    pub(super) fn line_at(&self, doc: Option<usize>, path: &str, needle: &str) -> Option<usize> {
        let (from, last) = match doc {
            Some(doc) => (self.outline.line(doc, path)?, self.outline.span(doc)?.1),
            None => (1, usize::MAX),
        };
        self.text
            .lines()
            .enumerate()
            .skip(from.saturating_sub(1))
            .take_while(|(i, _)| *i < last)
            .find(|(_, l)| l.contains(needle))
            .map(|(i, _)| i + 1)
            .or(doc.map(|_| from))
    }
}
