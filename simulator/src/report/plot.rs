//! Line plots over virtual time as inline SVG: round axis ticks, series that break where there
//! is nothing worth drawing, horizontal bounds, dots, and labelled decision markers.

use std::fmt::Write as _;

use fledge_controller::spec::Duration;

use super::html::escape;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 240.0;
const PAD_LEFT: f64 = 60.0;
const PAD_RIGHT: f64 = 20.0;
const PAD_TOP: f64 = 34.0;
const PAD_BOTTOM: f64 = 30.0;

/// A line through points; `None` breaks it (a window with too little to show).
pub(super) struct Series {
    pub(super) name: String,
    pub(super) color: &'static str,
    pub(super) dashed: bool,
    /// A step function (held until the next point) rather than a line between points.
    pub(super) steps: bool,
    pub(super) points: Vec<(f64, Option<f64>)>,
}

/// A horizontal line at a value: a metric's bound.
pub(super) struct Bound {
    pub(super) label: String,
    pub(super) value: f64,
}

/// Single points: the values an analysis read, `true` where it failed the check.
pub(super) struct Dots {
    pub(super) name: String,
    pub(super) points: Vec<(f64, f64, bool)>,
}

/// A decision at a time: a short label on the plot, the full text as a tooltip.
pub(super) struct Mark {
    pub(super) at_ms: f64,
    pub(super) label: String,
    pub(super) text: String,
    pub(super) warning: bool,
}

pub(super) struct Plot<'a> {
    pub(super) title: &'a str,
    pub(super) end_ms: f64,
    /// The values the y axis must show; it is widened to round ticks.
    pub(super) range: (f64, f64),
    pub(super) series: Vec<Series>,
    pub(super) bounds: Vec<Bound>,
    pub(super) dots: Option<Dots>,
    pub(super) marks: &'a [Mark],
    /// Whether the marks carry their labels here.
    pub(super) labelled: bool,
    /// A line under the legend: what is and is not drawn.
    pub(super) note: &'a str,
}

/// Round tick values covering `[lo, hi]`: steps of 1, 2 or 5 times a power of ten, about five.
pub(super) fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    let rough = (hi - lo) / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    // Multiples of the step, computed from integers so that 0.1 + 0.2 never shows.
    (0..=(last - first) as i64)
        .map(|i| ((first + i as f64) * step * 1e9).round() / 1e9)
        .collect()
}

/// Round time ticks (1s, 2s, 5s, 10s, 15s, 30s, 1m, 2m, 5m, ...) from 0 to past `end_ms`,
/// about eight of them.
pub(super) fn time_ticks(end_ms: f64) -> Vec<f64> {
    const STEPS_S: [u64; 17] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
    ];
    let rough = end_ms / 8.0;
    let step = STEPS_S
        .iter()
        .map(|s| (s * 1000) as f64)
        .find(|s| *s >= rough)
        .unwrap_or(86_400_000.0 * (rough / 86_400_000.0).ceil());
    (0..)
        .map(|i| i as f64 * step)
        .take_while(|t| *t <= end_ms + 1e-6)
        .collect()
}

/// A number as a tick label: no trailing zeros.
fn label(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl Plot<'_> {
    pub(super) fn render(&self, out: &mut String) {
        let values = self.range;
        let ys = ticks(values.0, values.1);
        let (lo, hi) = (ys[0], ys[ys.len() - 1]);
        let end = self.end_ms.max(1.0);
        let x = |t: f64| PAD_LEFT + (WIDTH - PAD_LEFT - PAD_RIGHT) * t / end;
        let y = |v: f64| {
            PAD_TOP + (HEIGHT - PAD_TOP - PAD_BOTTOM) * (1.0 - (v.clamp(lo, hi) - lo) / (hi - lo))
        };
        let bottom = HEIGHT - PAD_BOTTOM;
        let _ = write!(
            out,
            "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\">",
            escape(self.title)
        );
        for v in &ys {
            let _ = write!(
                out,
                "<line x1=\"{PAD_LEFT}\" x2=\"{}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
                WIDTH - PAD_RIGHT,
                PAD_LEFT - 6.0,
                y(*v) + 4.0,
                label(*v),
                yv = y(*v)
            );
        }
        for t in time_ticks(end) {
            let _ = write!(
                out,
                "<line x1=\"{xt:.1}\" x2=\"{xt:.1}\" y1=\"{bottom}\" y2=\"{}\" class=\"axis-tick\"/><text x=\"{xt:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
                bottom + 4.0,
                HEIGHT - 10.0,
                Duration(t.round() as u64),
                xt = x(t)
            );
        }
        for m in self.marks {
            let xm = x(m.at_ms);
            let class = if m.warning { "mark warn" } else { "mark" };
            let _ = write!(
                out,
                "<line x1=\"{xm:.1}\" x2=\"{xm:.1}\" y1=\"{PAD_TOP}\" y2=\"{bottom}\" class=\"{class}\"><title>{} {}</title></line>",
                Duration(m.at_ms as u64),
                escape(&m.text)
            );
            if self.labelled {
                // Upright text down from the top of the marker, so that close decisions stay
                // readable.
                let _ = write!(
                    out,
                    "<text transform=\"translate({:.1},{:.1}) rotate(-90)\" text-anchor=\"end\" class=\"mark-label{}\">{}<title>{}</title></text>",
                    xm + 10.0,
                    PAD_TOP + 2.0,
                    if m.warning { " warn" } else { "" },
                    escape(&m.label),
                    escape(&m.text)
                );
            }
        }
        for b in &self.bounds {
            let yb = y(b.value);
            // Above its line, or below it at the top of the plot where the legend is.
            let label_y = if yb - 4.0 < PAD_TOP + 8.0 {
                yb + 12.0
            } else {
                yb - 4.0
            };
            let _ = write!(
                out,
                "<line x1=\"{PAD_LEFT}\" x2=\"{}\" y1=\"{yb:.1}\" y2=\"{yb:.1}\" class=\"bound\"/><text x=\"{}\" y=\"{:.1}\" class=\"bound-label\" text-anchor=\"end\">{}</text>",
                WIDTH - PAD_RIGHT,
                WIDTH - PAD_RIGHT - 4.0,
                label_y,
                escape(&b.label)
            );
        }
        for s in &self.series {
            for run in runs(&s.points, s.steps) {
                let path: Vec<String> = run
                    .iter()
                    .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
                    .collect();
                let dash = if s.dashed {
                    " stroke-dasharray=\"5 4\""
                } else {
                    ""
                };
                let _ = write!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                    s.color,
                    path.join(" ")
                );
            }
        }
        if let Some(d) = &self.dots {
            for (t, v, failed) in &d.points {
                let _ = write!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3.5\" class=\"{}\"><title>{} {}</title></circle>",
                    x(*t),
                    y(*v),
                    if *failed { "dot fail" } else { "dot" },
                    Duration(*t as u64),
                    label(*v)
                );
            }
        }
        self.legend(out);
        out.push_str("</svg></figure>\n");
    }

    fn legend(&self, out: &mut String) {
        let mut items: Vec<(Swatch, &str)> = self
            .series
            .iter()
            .map(|s| (Swatch::Fill(s.color), s.name.as_str()))
            .collect();
        if let Some(d) = &self.dots {
            items.push((Swatch::Dot, &d.name));
        }
        if !self.bounds.is_empty() {
            items.push((Swatch::Bound, "bound the analysis checks"));
        }
        let mut at = PAD_LEFT;
        for (swatch, name) in items {
            let shape = match swatch {
                Swatch::Fill(color) => format!(
                    "<rect x=\"{at}\" y=\"4\" width=\"12\" height=\"10\" fill=\"{color}\"/>"
                ),
                Swatch::Dot => format!(
                    "<circle cx=\"{}\" cy=\"9\" r=\"3.5\" class=\"dot\"/>",
                    at + 6.0
                ),
                Swatch::Bound => format!(
                    "<line x1=\"{at}\" x2=\"{}\" y1=\"9\" y2=\"9\" class=\"bound\"/>",
                    at + 12.0
                ),
            };
            let _ = write!(
                out,
                "{shape}<text x=\"{}\" y=\"13\" class=\"axis\">{}</text>",
                at + 16.0,
                escape(name)
            );
            at += 26.0 + 6.5 * name.chars().count() as f64;
        }
        if !self.note.is_empty() {
            let _ = write!(
                out,
                "<text x=\"{PAD_LEFT}\" y=\"27\" class=\"note\">{}</text>",
                escape(self.note)
            );
        }
    }
}

enum Swatch {
    Fill(&'static str),
    Dot,
    Bound,
}

/// The unbroken stretches of a series, as the points to draw: a step function holds each
/// value until the next point.
fn runs(points: &[(f64, Option<f64>)], steps: bool) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for &(t, v) in points {
        match v {
            Some(v) => {
                if steps && let Some(&(_, held)) = current.last() {
                    current.push((t, held));
                }
                current.push((t, v));
            }
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_ticks_are_round_steps_covering_the_range() {
        assert_eq!(ticks(93.7, 100.0), [92.0, 94.0, 96.0, 98.0, 100.0]);
        assert_eq!(ticks(0.0, 1.0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(0.0, 960.0), [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]);
        assert_eq!(ticks(99.0, 99.0), [99.0, 99.2, 99.4, 99.6, 99.8, 100.0]);
    }

    #[test]
    fn time_ticks_fall_on_round_durations() {
        assert_eq!(
            time_ticks(20.0 * 60_000.0),
            [0.0, 300_000.0, 600_000.0, 900_000.0, 1_200_000.0]
        );
        assert_eq!(time_ticks(90_000.0).len(), 7); // every 15s
        assert_eq!(time_ticks(90_000.0)[1], 15_000.0);
    }

    #[test]
    fn a_series_breaks_where_a_window_has_nothing_to_show_and_steps_hold_their_value() {
        let points = [
            (0.0, Some(1.0)),
            (1.0, Some(2.0)),
            (2.0, None),
            (3.0, Some(4.0)),
        ];
        assert_eq!(
            runs(&points, false),
            [vec![(0.0, 1.0), (1.0, 2.0)], vec![(3.0, 4.0)]]
        );
        assert_eq!(
            runs(&points[..2], true),
            [vec![(0.0, 1.0), (1.0, 1.0), (1.0, 2.0)]]
        );
    }
}
