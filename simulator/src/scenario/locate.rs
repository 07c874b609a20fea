//! Finding the line of a field in YAML text, for error messages about values that parsed but
//! do not make sense (the parser's own errors carry their line already).

/// The 1-based line where `path` (e.g. `traffic[1].rate`, `canary.spec.analysis.stepWeights[2]`)
/// is written, or the line of its nearest ancestor that can be found.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found: Option<usize> = None;
    let mut start = 0;
    let mut parent_indent: isize = -1;
    for segment in segments(path) {
        let hit = match segment {
            Segment::Key(key) => find_key(&lines, start, parent_indent, key),
            Segment::Index(i) => find_item(&lines, start, parent_indent, i),
        };
        let Some((line, indent)) = hit else { break };
        found = Some(line + 1);
        start = line + 1;
        parent_indent = indent;
        // A key on a list item's own line (`- key: v`) is indented like the item's contents.
        if let Segment::Index(_) = segment {
            start = line;
        }
    }
    found
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

fn indent_of(line: &str) -> isize {
    (line.len() - line.trim_start().len()) as isize
}

/// The lines of the block that starts at `start` and lasts while lines are indented deeper than
/// `parent`, without blanks and comments: `(index, indent, text without the indent)`.
fn block<'a>(
    lines: &'a [&'a str],
    start: usize,
    parent: isize,
) -> impl Iterator<Item = (usize, isize, &'a str)> {
    lines
        .iter()
        .enumerate()
        .skip(start)
        .map(|(i, line)| (i, indent_of(line), line.trim_start()))
        .filter(|(_, _, text)| !text.is_empty() && !text.starts_with('#'))
        .take_while(move |&(i, indent, _)| indent > parent || i == start)
}

/// A line of the block whose content is `key:` (possibly after `- `), deeper than the parent.
fn find_key(lines: &[&str], start: usize, parent: isize, key: &str) -> Option<(usize, isize)> {
    block(lines, start, parent).find_map(|(i, indent, text)| {
        let content = text.strip_prefix("- ").unwrap_or(text);
        let content_indent = indent + (text.len() - content.len()) as isize;
        let rest = content.strip_prefix(key)?;
        (content_indent > parent && (rest.starts_with(':') || rest.starts_with("\":")))
            .then_some((i, content_indent))
    })
}

/// The `index`-th list item (`- `) of the block that starts at `start`.
fn find_item(lines: &[&str], start: usize, parent: isize, index: usize) -> Option<(usize, isize)> {
    let mut item_indent = None;
    block(lines, start, parent)
        .filter(|(_, _, text)| text.starts_with("- ") || *text == "-")
        .filter(|&(_, indent, _)| *item_indent.get_or_insert(indent) == indent)
        .nth(index)
        .map(|(i, indent, _)| (i, indent))
}

#[cfg(test)]
mod tests {
    use super::line_of;

    const TEXT: &str = "name: x\ntraffic:\n  - client: a\n    rate: 1\n  - client: b\n    rate: 2\ncanary:\n  spec:\n    analysis:\n      stepWeights: [1]\n";

    #[test]
    fn finds_nested_keys_and_list_items() {
        assert_eq!(line_of(TEXT, "name"), Some(1));
        assert_eq!(line_of(TEXT, "traffic[1].rate"), Some(6));
        assert_eq!(line_of(TEXT, "traffic[0].client"), Some(3));
        assert_eq!(line_of(TEXT, "canary.spec.analysis.stepWeights"), Some(10));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        assert_eq!(
            line_of(TEXT, "canary.spec.analysis.stepWeights[3]"),
            Some(10)
        );
        assert_eq!(line_of(TEXT, "canary.spec.service"), Some(8));
        assert_eq!(line_of(TEXT, "nothing"), None);
    }
}
