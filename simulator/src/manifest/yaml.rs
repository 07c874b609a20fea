//! YAML text as users write it, read before any deserialiser sees it: how deeply it nests, and
//! on which line each field is written.
//!
//! The deserialisers recurse once per level of nesting, and libyaml's scanner spends time
//! quadratic in the depth of flow collections (`[[[[…`), so a text nested deeper than
//! [`MAX_DEPTH`] is refused first, by an event parser with nesting limits that reads it in time
//! linear in its length. The same events give every node's line by its path from its document's
//! root (`spec.analysis.stepWeights[1]`), so an error about a value that parsed but makes no
//! sense points at the value, in the right document.

use std::collections::BTreeMap;

use granit_parser::{BorrowedInput, ErrorKind, Event, Options, Parser, StrInput};

/// How deeply collections may nest. Kubernetes manifests and scenarios use about 15 levels.
pub(crate) const MAX_DEPTH: usize = 64;

/// A text nested deeper than [`MAX_DEPTH`], at the 1-based line where it went too deep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooDeep {
    pub(crate) line: usize,
}

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "collections nested deeper than {MAX_DEPTH} levels")
    }
}

fn options() -> Options {
    let mut options = Options::default();
    options.flow_nesting_limit = MAX_DEPTH;
    options.block_nesting_limit = MAX_DEPTH;
    options.emit_comments = false;
    options
}

fn parser(text: &str) -> Parser<'_, StrInput<'_>> {
    Parser::new_from_str_with_options(text, options())
}

/// Refuses a text whose collections nest deeper than [`MAX_DEPTH`]. Other syntax errors pass:
/// the deserialiser reports them in its own words.
pub(crate) fn check_depth(text: &str) -> Result<(), TooDeep> {
    first_too_deep(parser(text))
}

fn first_too_deep<'i, T: BorrowedInput<'i>>(events: Parser<'i, T>) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    for item in events {
        match item {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), span)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(TooDeep {
                        line: span.start.line(),
                    });
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            Err(e) if *e.kind() == ErrorKind::RecursionLimitExceeded => {
                return Err(TooDeep {
                    line: e.marker().line(),
                });
            }
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// The lines of a (multi-document) YAML text's nodes, by document and path.
#[derive(Debug, Default)]
pub(crate) struct Outline {
    docs: Vec<Document>,
}

#[derive(Debug, Default)]
struct Document {
    /// The line the document starts on (its `---`, or its first node).
    start: usize,
    /// Line of each node by path: a mapping's entry at its key, a list item at its start.
    lines: BTreeMap<String, usize>,
    /// A key written twice in one mapping: the path and the line of the second.
    duplicate: Option<(String, usize)>,
    kind: Option<String>,
    name: Option<String>,
}

/// An open collection while walking the events.
enum Frame {
    Mapping {
        path: String,
        /// The path of the entry whose value comes next; `None` while a key is expected.
        entry: Option<String>,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

impl Outline {
    /// Reads the text's structure; past a syntax error (or too deep a nesting) it keeps what it
    /// read before.
    pub(crate) fn of(text: &str) -> Outline {
        let mut docs: Vec<Document> = Vec::new();
        let mut frames: Vec<Frame> = Vec::new();
        for item in parser(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line();
            let node = match &event {
                Event::DocumentStart(..) => {
                    docs.push(Document {
                        start: line,
                        ..Document::default()
                    });
                    frames.clear();
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    frames.pop();
                    continue;
                }
                Event::Scalar(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Alias(..) => event.scalar().map(|(text, _)| text),
                _ => continue,
            };
            let Some(doc) = docs.last_mut() else { break };
            let path = match frames.last_mut() {
                None => {
                    doc.lines.entry(String::new()).or_insert(line);
                    String::new()
                }
                Some(Frame::Sequence { path, next }) => {
                    let p = format!("{path}[{next}]");
                    *next += 1;
                    doc.lines.insert(p.clone(), line);
                    p
                }
                Some(Frame::Mapping { path, entry }) => match entry.take() {
                    // A value: its entry's line is its key's.
                    Some(p) => {
                        match (p.as_str(), node) {
                            ("kind", Some(v)) => doc.kind = Some(v.to_string()),
                            ("metadata.name", Some(v)) => doc.name = Some(v.to_string()),
                            _ => {}
                        }
                        p
                    }
                    None => {
                        // A complex key (a collection) has no name to find it by.
                        let key = node.unwrap_or("?");
                        let p = if path.is_empty() {
                            key.to_string()
                        } else {
                            format!("{path}.{key}")
                        };
                        if doc.lines.insert(p.clone(), line).is_some() && doc.duplicate.is_none() {
                            doc.duplicate = Some((p.clone(), line));
                        }
                        *entry = Some(p.clone());
                        // The key is read; its value comes next, under the same path.
                        if node.is_some() {
                            continue;
                        }
                        p
                    }
                },
            };
            match event {
                Event::SequenceStart(..) => frames.push(Frame::Sequence { path, next: 0 }),
                Event::MappingStart(..) => frames.push(Frame::Mapping { path, entry: None }),
                _ => {}
            }
        }
        Outline { docs }
    }

    /// The number of documents read.
    pub(crate) fn documents(&self) -> usize {
        self.docs.len()
    }

    /// The 1-based line where `path` is written in document `doc` (0-based), or that of its
    /// nearest ancestor found, or the document's start.
    pub(crate) fn line(&self, doc: usize, path: &str) -> Option<usize> {
        let d = self.docs.get(doc)?;
        let mut p = path;
        loop {
            if let Some(line) = d.lines.get(p) {
                return Some(*line);
            }
            if p.is_empty() {
                return Some(d.start);
            }
            p = parent(p);
        }
    }

    /// The first and last line of document `doc`.
    pub(crate) fn span(&self, doc: usize) -> Option<(usize, usize)> {
        let start = self.docs.get(doc)?.start;
        let end = self
            .docs
            .get(doc + 1)
            .map_or(usize::MAX, |next| next.start.saturating_sub(1));
        Some((start, end.max(start)))
    }

    /// The first document whose top-level `kind` is `kind` (and `metadata.name` is `name`).
    pub(crate) fn document(&self, kind: &str, name: Option<&str>) -> Option<usize> {
        self.docs.iter().position(|d| {
            d.kind.as_deref() == Some(kind) && name.is_none_or(|n| d.name.as_deref() == Some(n))
        })
    }

    /// The first key written twice in one mapping of document `doc`: its path and the line
    /// of its second occurrence.
    pub(crate) fn duplicate(&self, doc: usize) -> Option<(&str, usize)> {
        let (path, line) = self.docs.get(doc)?.duplicate.as_ref()?;
        Some((path.as_str(), *line))
    }
}

/// `a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``.
fn parent(path: &str) -> &str {
    if path.ends_with(']')
        && let Some(i) = path.rfind('[')
    {
        return &path[..i];
    }
    path.rfind('.').map_or("", |i| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCENARIO: &str = "name: x
service:
  name: podinfo
  canary:
    error_rate: 0.05
traffic:
  - client: a
    rate: 1
    headers: [{weight: 1}, {weight: 2}]
  - client: b
    rate: 2
canary:
  spec:
    analysis:
      stepWeights: [30, 10, 20]
      metrics:
        - name: request-success-rate
";

    #[test]
    fn a_path_is_found_from_the_document_root_not_at_the_first_key_of_that_name() {
        let o = Outline::of(SCENARIO);
        assert_eq!(o.line(0, "canary.spec.analysis.stepWeights"), Some(15));
        assert_eq!(o.line(0, "service.canary.error_rate"), Some(5));
        assert_eq!(o.line(0, "canary"), Some(12));
    }

    #[test]
    fn an_index_into_an_inline_list_is_the_line_of_that_item() {
        let o = Outline::of(SCENARIO);
        assert_eq!(o.line(0, "canary.spec.analysis.stepWeights[1]"), Some(15));
        assert_eq!(o.line(0, "traffic[0].headers[1].weight"), Some(9));
        assert_eq!(o.line(0, "traffic[1].rate"), Some(11));
        assert_eq!(o.line(0, "canary.spec.analysis.metrics[0].name"), Some(17));
        let multi_line = "steps: [\n  1,\n  2,\n  3]\n";
        assert_eq!(Outline::of(multi_line).line(0, "steps[2]"), Some(4));
    }

    #[test]
    fn a_missing_path_falls_back_to_its_nearest_ancestor() {
        let o = Outline::of(SCENARIO);
        assert_eq!(o.line(0, "canary.spec.analysis.stepWeights[7]"), Some(15));
        assert_eq!(o.line(0, "canary.spec.service.port"), Some(13));
        assert_eq!(o.line(0, "nothing"), Some(1));
        assert_eq!(o.line(1, "name"), None);
    }

    #[test]
    fn each_document_of_a_stream_has_its_own_lines() {
        let text = "# two rules\n---\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n---\nkind: DestinationRule\nmetadata:\n  name: b\nspec:\n  host: b\n  subsets: 7\n";
        let o = Outline::of(text);
        assert_eq!(o.documents(), 2);
        assert_eq!(o.line(0, "spec.host"), Some(6));
        assert_eq!(o.line(1, "spec.host"), Some(12));
        assert_eq!(o.line(1, "spec.subsets"), Some(13));
        // Not in document 1's spec: its own `spec`, never document 0's.
        assert_eq!(o.line(1, "spec.trafficPolicy"), Some(11));
        assert_eq!(o.document("DestinationRule", Some("b")), Some(1));
        assert_eq!(o.span(0), Some((2, 6)));
    }

    #[test]
    fn a_key_written_twice_is_found_at_its_second_line() {
        let text = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n";
        assert_eq!(Outline::of(text).duplicate(0), Some(("b.c", 5)));
        assert_eq!(Outline::of(SCENARIO).duplicate(0), None);
    }

    /// Characters the parser has taken from its input.
    fn read_before_refusal(text: &str) -> (Result<(), TooDeep>, usize) {
        let read = std::cell::Cell::new(0usize);
        let chars = text.chars().inspect(|_| read.set(read.get() + 1));
        let verdict = first_too_deep(Parser::new_from_iter_with_options(chars, options()));
        (verdict, read.get())
    }

    #[test]
    fn a_hundred_thousand_deep_document_is_refused_after_reading_a_bounded_prefix() {
        // The work is bounded by what is read: refusing early is refusing in linear time.
        let deep = "[".repeat(100_000);
        let (verdict, read) = read_before_refusal(&deep);
        assert_eq!(verdict, Err(TooDeep { line: 1 }));
        assert!(read < 2_000, "read {read} characters");
        let dashes = format!("a:\n  {}", "- ".repeat(100_000));
        let (verdict, read) = read_before_refusal(&dashes);
        assert_eq!(verdict, Err(TooDeep { line: 2 }));
        assert!(read < 2_000, "read {read} characters");
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check_depth(&fine), Ok(()));
        let one_more = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(check_depth(&one_more).is_err());
        // A syntax error is left to the deserialiser.
        assert_eq!(check_depth("a: [b"), Ok(()));
    }
}
