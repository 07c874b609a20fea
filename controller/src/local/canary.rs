//! The Canary file of `fledge-controller local`: one Canary, and the MetricTemplates its
//! metrics name, read by the same loader as everywhere else, its errors placed at
//! `FILE:LINE` as `fledge-sim` places them.

use std::path::Path;

use crate::spec::{
    Canary, LoadError, MetricTemplate, RolloutSpec, ValidationErrors, load_manifests, validate,
};

/// What the file holds.
#[derive(Debug)]
pub struct CanaryFile {
    pub canary: Canary,
    /// The Canary's spec as validated.
    pub spec: RolloutSpec,
    pub templates: Vec<MetricTemplate>,
    /// Fields ignored and settings changed, one line each, placed in the file.
    pub warnings: Vec<String>,
}

/// Reads `path`; an error is the whole message, every problem on its own `FILE:LINE: ` line.
pub fn read(path: &Path) -> Result<CanaryFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// [`read`] of a text already read; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> Result<CanaryFile, String> {
    let at = |doc: usize, field: &str| {
        let line = line_of(text, doc.saturating_sub(1), field).unwrap_or(1);
        format!("{file}:{line}")
    };
    // Every problem on its own line, at the line of its field.
    let invalid = |document: usize, kind: &str, name: &str, errors: &ValidationErrors| {
        let mut message = format!(
            "{}: document {document} ({kind} {name}) does not validate:",
            at(document, "")
        );
        for e in &errors.0 {
            message.push_str(&format!("\n  {}: {e}", at(document, &e.path)));
        }
        message
    };
    let loaded = match load_manifests(text) {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid {
            document,
            kind,
            name,
            errors,
        }) => return Err(invalid(document, &kind, &name, &errors)),
        Err(e) => {
            let place = match &e {
                LoadError::Yaml {
                    line: Some(line), ..
                } => format!("{file}:{line}"),
                LoadError::Yaml { document, .. } => at(*document, ""),
                LoadError::Field { document, path, .. } => at(*document, path),
                LoadError::ApiVersion { document, .. } => at(*document, "apiVersion"),
                LoadError::Invalid { document, .. } => at(*document, ""),
            };
            return Err(format!("{place}: {e}"));
        }
    };
    let mut warnings: Vec<String> = loaded
        .ignored
        .iter()
        .map(|f| format!("{file}: {f}: not a field Fledge knows; ignored"))
        .collect();
    warnings.extend(loaded.warnings.iter().map(|w| format!("{file}: {w}")));
    let count = loaded.canaries.len();
    let Ok([canary]) = <[Canary; 1]>::try_from(loaded.canaries) else {
        return Err(format!(
            "{file}: must hold exactly one Canary (apiVersion fledge.dev/v1alpha1 or \
             flagger.app/v1beta1), found {count}"
        ));
    };
    // The loader validates only a Canary it had to fill in; its spec is checked here, where
    // its fields' lines are known.
    let spec = validate(&canary.spec).map_err(|errors| {
        let document = canary_document(text).unwrap_or(1);
        let name = canary.metadata.name.as_deref().unwrap_or("(unnamed)");
        invalid(document, "Canary", name, &errors)
    })?;
    Ok(CanaryFile {
        canary,
        spec,
        templates: loaded.metric_templates,
        warnings,
    })
}

/// The 1-based number of the document that holds the Canary (`kind: Canary` at its top level).
fn canary_document(text: &str) -> Option<usize> {
    documents(text)
        .iter()
        .position(|doc| {
            doc.iter()
                .any(|l| l.indent == 0 && l.content.trim_end() == "kind: Canary")
        })
        .map(|i| i + 1)
}

/// One step of a field's path: `analysis` or `[2]`.
enum Step<'a> {
    Key(&'a str),
    Item(usize),
}

fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Step::Key(key.trim_matches('"')));
        }
        while let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) {
            if let Ok(i) = rest[open + 1..close].parse() {
                out.push(Step::Item(i));
            }
            rest = &rest[close + 1..];
        }
    }
    out
}

/// A line that holds something: its 1-based number, indentation and content. A list item's
/// line (`- name: x`) is read as two: the dash, and its first entry two columns further in.
#[derive(Clone, Copy)]
struct Line<'t> {
    number: usize,
    indent: usize,
    content: &'t str,
}

const DASH: &str = "-";

/// The documents of a YAML text, as [`Line`]s.
fn documents(text: &str) -> Vec<Vec<Line<'_>>> {
    let mut docs: Vec<Vec<Line<'_>>> = vec![Vec::new()];
    for (i, raw) in text.lines().enumerate() {
        if raw.starts_with("---") {
            docs.push(Vec::new());
            continue;
        }
        let Some(doc) = docs.last_mut() else { break };
        let mut content = raw.trim_start();
        let mut indent = raw.len() - content.len();
        while content == DASH || content.starts_with("- ") {
            doc.push(Line {
                number: i + 1,
                indent,
                content: DASH,
            });
            let rest = content[1..].trim_start();
            indent += content.len() - rest.len();
            content = rest;
        }
        if !content.is_empty() && !content.starts_with('#') {
            doc.push(Line {
                number: i + 1,
                indent,
                content,
            });
        }
    }
    // A text that starts with `---` has no document before it.
    if docs.len() > 1 && docs[0].is_empty() {
        docs.remove(0);
    }
    docs
}

/// The 1-based line of `path` (`spec.analysis.metrics[1].interval`) in document `doc` (0-based)
/// of a block-style YAML text, or that of its nearest ancestor found; `None` without that
/// document. Flow collections (`{a: 1}`) are not looked into: their ancestor's line is given.
fn line_of(text: &str, doc: usize, path: &str) -> Option<usize> {
    let docs = documents(text);
    let lines = docs.get(doc)?;
    let mut found = lines.first().map(|l| l.number);
    // The block searched: lines from `from` indented deeper than `parent` (a list may sit at
    // its key's own indentation).
    let (mut from, mut parent) = (0usize, None::<usize>);
    for step in steps(path) {
        let list = matches!(step, Step::Item(_));
        let block: Vec<(usize, Line<'_>)> = lines
            .iter()
            .copied()
            .enumerate()
            .skip(from)
            .take_while(|(_, l)| {
                parent.is_none_or(|p| l.indent > p || (list && l.indent == p && l.content == DASH))
            })
            .collect();
        // Direct children only: those at the block's first indentation.
        let Some(first) = block.first().map(|(_, l)| l.indent) else {
            break;
        };
        let mut children = block.into_iter().filter(|(_, l)| l.indent == first);
        let hit = match step {
            Step::Key(key) => children.find(|(_, l)| {
                let rest = l.content.strip_prefix(key).or_else(|| {
                    l.content
                        .strip_prefix('"')
                        .and_then(|c| c.strip_prefix(key))
                        .and_then(|c| c.strip_prefix('"'))
                });
                rest.is_some_and(|r| r.trim_start().starts_with(':'))
            }),
            Step::Item(n) => children.filter(|(_, l)| l.content == DASH).nth(n),
        };
        let Some((i, line)) = hit else { break };
        found = Some(line.number);
        (from, parent) = (i + 1, Some(line.indent));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "\
# a comment
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
spec:
  targetRef:
    name: podinfo
  analysis:
    interval: 10s
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
    - name: request-duration
      threshold: many
    stepWeight: 50
  service:
    port: 9898
";

    #[test]
    fn a_fields_line_is_found_by_its_path_through_lists() {
        assert_eq!(line_of(CANARY, 0, "spec.analysis.interval"), Some(10));
        assert_eq!(
            line_of(CANARY, 0, "spec.analysis.metrics[0].thresholdRange.min"),
            Some(14)
        );
        assert_eq!(
            line_of(CANARY, 0, "spec.analysis.metrics[1].threshold"),
            Some(16)
        );
        assert_eq!(line_of(CANARY, 0, "spec.analysis.metrics[1]"), Some(15));
        // Not written: the nearest ancestor.
        assert_eq!(line_of(CANARY, 0, "spec.analysis.stepWeight"), Some(17));
        assert_eq!(line_of(CANARY, 0, "spec.service.port"), Some(19));
        assert_eq!(line_of(CANARY, 0, "spec.analysis.maxWeight"), Some(9));
        assert_eq!(line_of(CANARY, 0, ""), Some(2));
        let two = format!("---\nkind: MetricTemplate\n---\n{CANARY}");
        assert_eq!(line_of(&two, 1, "spec.analysis.interval"), Some(13));
        assert_eq!(line_of(&two, 2, "spec"), None);
    }

    #[test]
    fn a_bad_field_is_named_with_its_file_and_line() {
        let e = parse("canary.yaml", CANARY).unwrap_err();
        assert!(
            e.starts_with(
                "canary.yaml:16: document 1 (Canary podinfo): spec.analysis.metrics[1].threshold:"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_spec_that_does_not_validate_is_placed_at_its_file_and_line() {
        let bad = CANARY
            .replace("many", "2")
            .replace("interval: 10s", "interval: 10 seconds");
        let e = parse("c.yaml", &bad).map(drop).unwrap_err();
        assert!(e.contains("c.yaml:10:"), "{e}");
        assert!(e.contains("spec.analysis.interval"), "{e}");
        // In a second document, after a MetricTemplate.
        let template = "kind: MetricTemplate\napiVersion: flagger.app/v1beta1\nmetadata:\n  \
                        name: t\nspec:\n  provider:\n    type: prometheus\n  query: up\n";
        let two = format!("{template}---\n{bad}");
        let e = parse("c.yaml", &two).map(drop).unwrap_err();
        assert!(e.contains("c.yaml:19: spec.analysis.interval"), "{e}");
        assert!(e.contains("document 2 (Canary podinfo)"), "{e}");
    }

    #[test]
    fn a_file_without_a_canary_is_refused() {
        let e = parse("c.yaml", "apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(e.contains("c.yaml: must hold exactly one Canary"), "{e}");
    }

    #[test]
    fn yaml_that_does_not_parse_is_placed_at_its_line() {
        let e = parse("c.yaml", "kind: Canary\nspec: [\n  a: b\n").unwrap_err();
        assert!(e.starts_with("c.yaml:4: document 1: not valid YAML"), "{e}");
    }

    #[test]
    fn a_valid_canary_is_read_with_its_templates() {
        let good = CANARY.replace("many", "2");
        let file = parse("c.yaml", &good).unwrap();
        assert_eq!(file.canary.spec.target_ref.name, "podinfo");
        assert!(file.templates.is_empty());
    }
}
