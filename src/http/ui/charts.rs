//! Charts drawn on the server as SVG text: grouped bars and lines over a shared frame with axis
//! labels, a legend with text labels (a series is never told apart by colour alone), a `<title>`
//! and a `<desc>` that the `role="img"` element is labelled by. No script and no chart crate; the
//! pages put the markup in as it is, so every text that goes in is escaped here.

use std::fmt::Write;

/// One series of a chart: a name for the legend, a colour, one value per point.
pub struct Series {
    pub name: String,
    pub colour: &'static str,
    pub values: Vec<i64>,
}

/// What to draw: points along the x axis (one label each, some shown), series over them.
pub struct Chart {
    /// Unique on the page: the ids of the title and description derive from it.
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// One label per point; about [`MAX_X_TICKS`] of them are written under the axis.
    pub points: Vec<String>,
    pub series: Vec<Series>,
}

/// The two colours the dashboard's charts use (blue, orange: told apart by most colour-blind
/// readers, and always named in the legend).
pub const BLUE: &str = "#2563eb";
pub const ORANGE: &str = "#d97706";

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 52.0;
const MAX_X_TICKS: usize = 6;

/// The top of the y axis: the smallest of 1, 2, 5 times a power of ten at or above `max` (1 for
/// no data or nothing above 0), so the middle tick is a round number too.
pub fn nice_max(max: i64) -> i64 {
    if max <= 1 {
        return 1;
    }
    let mut power: i64 = 1;
    loop {
        for step in [1, 2, 5] {
            let candidate = step * power;
            if candidate >= max {
                return candidate;
            }
        }
        match power.checked_mul(10) {
            Some(p) => power = p,
            None => return max,
        }
    }
}

/// Text made safe for SVG (XML) content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Chart {
    fn count(&self) -> usize {
        self.points.len()
    }

    fn y_top(&self) -> i64 {
        nice_max(
            self.series
                .iter()
                .flat_map(|s| s.values.iter().copied())
                .max()
                .unwrap_or(0),
        )
    }

    fn plot_width(&self) -> f64 {
        WIDTH - LEFT - RIGHT
    }

    fn plot_height(&self) -> f64 {
        HEIGHT - TOP - BOTTOM
    }

    /// The y coordinate of a value on a scale from 0 to `top`.
    fn y(&self, value: i64, top: i64) -> f64 {
        let share = value.clamp(0, top) as f64 / top as f64;
        TOP + self.plot_height() * (1.0 - share)
    }

    /// A sentence that says what the chart shows, for `<desc>`: each series' total and peak.
    fn description(&self) -> String {
        if self.count() == 0 {
            return format!("{}: no data yet.", self.title);
        }
        let parts: Vec<String> = self
            .series
            .iter()
            .map(|s| {
                let total: i64 = s.values.iter().sum();
                let peak = s.values.iter().copied().max().unwrap_or(0);
                format!("{} total {total}, peak {peak}", s.name)
            })
            .collect();
        format!(
            "{} from {} to {}: {}.",
            self.title,
            self.points.first().map(String::as_str).unwrap_or(""),
            self.points.last().map(String::as_str).unwrap_or(""),
            parts.join("; ")
        )
    }

    /// The frame: svg element, title, description, axes, y ticks, x labels, legend.
    fn open(&self, out: &mut String, top: i64) {
        let id = escape(&self.id);
        let _ = write!(
            out,
            "<svg class=\"chart\" id=\"{id}\" role=\"img\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
             aria-labelledby=\"{id}-title {id}-desc\" xmlns=\"http://www.w3.org/2000/svg\">\
             <title id=\"{id}-title\">{}</title><desc id=\"{id}-desc\">{}</desc>",
            escape(&self.title),
            escape(&self.description())
        );
        let (x0, y0, x1) = (LEFT, TOP + self.plot_height(), WIDTH - RIGHT);
        let _ = write!(
            out,
            "<g class=\"axes\" stroke=\"#9ca3af\" stroke-width=\"1\">\
             <line x1=\"{x0}\" y1=\"{TOP}\" x2=\"{x0}\" y2=\"{y0}\"/>\
             <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\"/></g>"
        );
        out.push_str("<g class=\"ticks\" font-size=\"11\" fill=\"currentColor\">");
        for value in [0, top / 2, top] {
            if value == top / 2 && top % 2 != 0 {
                continue;
            }
            let y = self.y(value, top);
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{value}</text>\
                 <line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/>",
                LEFT - 6.0,
                y
            );
        }
        let n = self.count();
        let every = n.div_ceil(MAX_X_TICKS).max(1);
        for (i, label) in self.points.iter().enumerate() {
            if i % every != 0 && i + 1 != n {
                continue;
            }
            let _ = write!(
                out,
                "<text class=\"x-tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                self.x_center(i),
                y0 + 14.0,
                escape(label)
            );
        }
        let _ = write!(
            out,
            "<text class=\"x-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <text class=\"y-label\" x=\"12\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">{}</text>",
            LEFT + self.plot_width() / 2.0,
            HEIGHT - 20.0,
            escape(&self.x_label),
            TOP + self.plot_height() / 2.0,
            TOP + self.plot_height() / 2.0,
            escape(&self.y_label)
        );
        out.push_str("</g>");
        // Legend: a swatch and the series' name, along the top.
        out.push_str("<g class=\"legend\" font-size=\"12\" fill=\"currentColor\">");
        let mut x = LEFT;
        for s in &self.series {
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"8\" width=\"12\" height=\"12\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"18\">{}</text>",
                s.colour,
                x + 16.0,
                escape(&s.name)
            );
            // Room for the name at about 8 units a letter (sans-serif at 12), and a gap.
            x += 32.0 + 8.0 * s.name.chars().count() as f64;
        }
        out.push_str("</g>");
        if n == 0 {
            let _ = write!(
                out,
                "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"currentColor\">No data yet</text>",
                LEFT + self.plot_width() / 2.0,
                TOP + self.plot_height() / 2.0
            );
        }
    }

    /// The x coordinate of the middle of point `i`'s slot.
    fn x_center(&self, i: usize) -> f64 {
        let n = self.count().max(1) as f64;
        LEFT + self.plot_width() * (i as f64 + 0.5) / n
    }

    /// Bars: at each point, one bar per series side by side.
    pub fn bars(&self) -> String {
        let top = self.y_top();
        let mut out = String::new();
        self.open(&mut out, top);
        let n = self.count();
        if n > 0 && !self.series.is_empty() {
            let slot = self.plot_width() / n as f64;
            let bar = (slot * 0.8) / self.series.len() as f64;
            let base = self.y(0, top);
            for (k, s) in self.series.iter().enumerate() {
                let _ = write!(out, "<g class=\"series\" fill=\"{}\">", s.colour);
                for (i, v) in s.values.iter().enumerate().take(n) {
                    if *v <= 0 {
                        continue;
                    }
                    let x = LEFT + slot * i as f64 + slot * 0.1 + bar * k as f64;
                    let y = self.y(*v, top);
                    let _ = write!(
                        out,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{:.1}\">\
                         <title>{}: {} {v}</title></rect>",
                        base - y,
                        escape(&self.points[i]),
                        escape(&s.name)
                    );
                }
                out.push_str("</g>");
            }
        }
        out.push_str("</svg>");
        out
    }

    /// Lines: one polyline per series with a marker at each point (a single point is a marker).
    pub fn lines(&self) -> String {
        let top = self.y_top();
        let mut out = String::new();
        self.open(&mut out, top);
        for s in &self.series {
            let points: Vec<(f64, f64, i64)> = s
                .values
                .iter()
                .enumerate()
                .take(self.count())
                .map(|(i, v)| (self.x_center(i), self.y(*v, top), *v))
                .collect();
            let _ = write!(
                out,
                "<g class=\"series\" fill=\"{0}\" stroke=\"{0}\">",
                s.colour
            );
            if points.len() > 1 {
                let path: Vec<String> = points
                    .iter()
                    .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
                    .collect();
                let _ = write!(
                    out,
                    "<polyline fill=\"none\" stroke-width=\"2\" points=\"{}\"/>",
                    path.join(" ")
                );
            }
            for (i, (x, y, v)) in points.iter().enumerate() {
                let _ = write!(
                    out,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\"><title>{}: {} {v}</title></circle>",
                    escape(&self.points[i]),
                    escape(&s.name)
                );
            }
            out.push_str("</g>");
        }
        out.push_str("</svg>");
        out
    }
}

/// A horizontal seat bar: used (blue) then held (orange) over the free rest (grey), labelled with
/// the counts in words for screen readers; the page writes the same counts as text beside it.
pub fn seat_bar(used: i64, held: i64, total: i64) -> String {
    let free = (total - used - held).max(0);
    let width = |n: i64| {
        if total <= 0 {
            0.0
        } else {
            (n.max(0) as f64 * 100.0 / total as f64).min(100.0)
        }
    };
    let (u, h) = (width(used), width(held));
    let h = h.min(100.0 - u);
    format!(
        "<svg class=\"seat-bar\" role=\"img\" aria-label=\"{used} used, {held} held, {free} free of {total} seats\" \
         viewBox=\"0 0 100 10\" preserveAspectRatio=\"none\" width=\"100%\" height=\"12\" xmlns=\"http://www.w3.org/2000/svg\">\
         <rect width=\"100\" height=\"10\" fill=\"#e5e7eb\"/>\
         <rect width=\"{u:.2}\" height=\"10\" fill=\"{BLUE}\"/>\
         <rect x=\"{u:.2}\" width=\"{h:.2}\" height=\"10\" fill=\"{ORANGE}\"/></svg>"
    )
}

/// A small colour square for a text legend (it has no meaning of its own: the text beside it names
/// the series).
pub fn swatch(colour: &str) -> String {
    format!(
        "<svg class=\"swatch\" aria-hidden=\"true\" width=\"10\" height=\"10\" viewBox=\"0 0 10 10\" \
         xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"10\" height=\"10\" fill=\"{}\"/></svg>",
        escape(colour)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: usize, a: Vec<i64>, b: Vec<i64>) -> Chart {
        Chart {
            id: "c".into(),
            title: "Jobs <per> hour".into(),
            x_label: "hour (UTC)".into(),
            y_label: "jobs".into(),
            points: (0..points).map(|i| format!("{i:02}:00")).collect(),
            series: vec![
                Series {
                    name: "succeeded".into(),
                    colour: BLUE,
                    values: a,
                },
                Series {
                    name: "failed".into(),
                    colour: ORANGE,
                    values: b,
                },
            ],
        }
    }

    #[test]
    fn nice_max_rounds_up_to_1_2_5_steps() {
        for (max, top) in [
            (-3, 1),
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 5),
            (5, 5),
            (6, 10),
            (11, 20),
            (20, 20),
            (21, 50),
            (51, 100),
            (999, 1000),
            (1001, 2000),
        ] {
            assert_eq!(nice_max(max), top, "nice_max({max})");
        }
        assert_eq!(nice_max(i64::MAX), i64::MAX);
    }

    #[test]
    fn values_scale_between_the_axis_ends() {
        let c = chart(2, vec![0, 10], vec![5, 0]);
        let top = c.y_top();
        assert_eq!(top, 10);
        assert_eq!(c.y(0, top), TOP + c.plot_height());
        assert_eq!(c.y(10, top), TOP);
        assert_eq!(c.y(5, top), TOP + c.plot_height() / 2.0);
        // Out-of-range values stay inside the frame.
        assert_eq!(c.y(50, top), TOP);
        assert_eq!(c.y(-1, top), TOP + c.plot_height());
    }

    #[test]
    fn bars_have_title_description_axis_labels_and_a_legend() {
        let svg = chart(3, vec![1, 4, 0], vec![0, 2, 1]).bars();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("role=\"img\""));
        assert!(svg.contains("aria-labelledby=\"c-title c-desc\""));
        assert!(svg.contains("<title id=\"c-title\">Jobs &lt;per&gt; hour</title>"));
        assert!(
            svg.contains("succeeded total 5, peak 4; failed total 3, peak 2"),
            "{svg}"
        );
        assert!(svg.contains(">hour (UTC)</text>") && svg.contains(">jobs</text>"));
        assert!(svg.contains(">succeeded</text>") && svg.contains(">failed</text>"));
        // One bar per value above zero: 2 + 2.
        assert_eq!(svg.matches("<rect x=").count() - 2, 4, "{svg}");
        // The axis runs to 5 (the round number above the peak 4): ticks 0 and 5, no half tick.
        for tick in [">0</text>", ">5</text>"] {
            assert!(svg.contains(tick), "{tick} in {svg}");
        }
        assert!(!svg.contains(">2</text>"), "{svg}");
        let even = chart(2, vec![3, 10], vec![0, 0]).bars();
        assert!(
            even.contains(">5</text>") && even.contains(">10</text>"),
            "{even}"
        );
    }

    #[test]
    fn empty_data_draws_the_frame_and_says_so() {
        let c = chart(0, vec![], vec![]);
        for svg in [c.bars(), c.lines()] {
            assert!(svg.contains("No data yet"), "{svg}");
            assert!(svg.contains("no data yet."), "{svg}");
            assert!(!svg.contains("<circle") && !svg.contains("<polyline"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn one_point_is_a_marker_in_the_middle_without_a_line() {
        let c = chart(1, vec![7], vec![3]);
        let svg = c.lines();
        assert!(!svg.contains("<polyline"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2);
        let middle = format!("cx=\"{:.1}\"", LEFT + c.plot_width() / 2.0);
        assert!(svg.contains(&middle), "{middle} in {svg}");
        assert!(!svg.contains("No data yet"));
        let two = chart(2, vec![1, 2], vec![2, 1]).lines();
        assert_eq!(two.matches("<polyline").count(), 2);
    }

    #[test]
    fn many_points_label_only_some_ticks_and_the_last() {
        let values: Vec<i64> = (0..24).collect();
        let svg = chart(24, values.clone(), values).bars();
        assert!(svg.matches("class=\"x-tick\"").count() <= MAX_X_TICKS + 1);
        assert!(svg.contains(">23:00</text>"));
        assert!(svg.contains(">00:00</text>"));
    }

    #[test]
    fn seat_bar_widths_follow_the_counts_and_stay_in_bounds() {
        let bar = seat_bar(5, 3, 20);
        assert!(bar.contains("aria-label=\"5 used, 3 held, 12 free of 20 seats\""));
        assert!(bar.contains("width=\"25.00\""), "{bar}");
        assert!(bar.contains("x=\"25.00\" width=\"15.00\""), "{bar}");
        let over = seat_bar(15, 10, 20);
        assert!(over.contains("0 free of 20"));
        assert!(over.contains("x=\"75.00\" width=\"25.00\""), "{over}");
        let none = seat_bar(0, 0, 0);
        assert!(none.contains("width=\"0.00\"") && !none.contains("NaN"));
    }
}
