//! Inline SVG plots for the HTML report: horizontal bars and a labelled scatter. Plain
//! SVG 1.1 with `<title>` tooltips, sized in pixels, no script and no external font, so
//! the report stays one self-contained file any browser renders offline.

use std::fmt::Write as _;

/// Escapes text for HTML and SVG content and attribute values.
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart: one bar per (label, value), scaled to the largest |value|,
/// with a reference line at `reference` (1.0x for speedup, 0 pp for drop).
pub(super) fn bars(title: &str, unit: &str, bars: &[(String, f64)], reference: f64) -> String {
    let row = 22.0;
    let (label_w, plot_w) = (200.0, 360.0);
    let h = 30.0 + row * bars.len() as f64;
    let max = bars
        .iter()
        .map(|(_, v)| v.abs())
        .chain([reference.abs(), 1e-9])
        .fold(0.0, f64::max);
    let has_neg = bars.iter().any(|(_, v)| *v < 0.0);
    // With negative values the axis sits in the middle.
    let (zero, scale) = if has_neg {
        (label_w + plot_w / 2.0, plot_w / 2.0 / max)
    } else {
        (label_w, plot_w / max)
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" width=\"{}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">\n<text x=\"4\" y=\"16\" font-weight=\"bold\">{}</text>\n",
        label_w + plot_w + 80.0,
        esc(title),
        esc(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = 26.0 + row * i as f64;
        let (x, w) = if *v >= 0.0 {
            (zero, v * scale)
        } else {
            (zero + v * scale, -v * scale)
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">{}</text><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {v:.3}{unit}</title></rect><text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{v:.2}{unit}</text>",
            label_w - 6.0,
            y + 13.0,
            esc(label),
            row - 6.0,
            if *v < 0.0 { "#c0392b" } else { "#2e86c1" },
            esc(label),
            x + w + 4.0,
            y + 13.0
        );
    }
    let rx = zero + reference * scale;
    let _ = writeln!(
        s,
        "<line x1=\"{rx:.1}\" y1=\"22\" x2=\"{rx:.1}\" y2=\"{h}\" stroke=\"#555\" stroke-dasharray=\"3,3\"/>\n</svg>"
    );
    s
}

/// One labelled point of a scatter plot.
pub(super) struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
}

/// A scatter plot with labelled points, axis titles, the axes' extreme values as ticks,
/// and dashed reference lines at `x_ref` and `y_ref` (0 pp drop, 1.0x speedup).
pub(super) fn scatter(
    title: &str,
    (x_title, x_ref): (&str, f64),
    (y_title, y_ref): (&str, f64),
    points: &[Point],
) -> String {
    let (left, top, w, h) = (60.0, 30.0, 420.0, 240.0);
    let range = |vals: &mut dyn Iterator<Item = f64>, reference: f64| {
        let (lo, hi) = vals.fold((reference, reference), |(lo, hi), v| (lo.min(v), hi.max(v)));
        // A little room around the extremes, and never an empty range.
        let pad = ((hi - lo) * 0.08).max(1e-3);
        (lo - pad, hi + pad)
    };
    let (x0, x1) = range(&mut points.iter().map(|p| p.x), x_ref);
    let (y0, y1) = range(&mut points.iter().map(|p| p.y), y_ref);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * w;
    let py = |y: f64| top + h - (y - y0) / (y1 - y0) * h;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"{}\">\n<text x=\"4\" y=\"16\" font-weight=\"bold\">{}</text>\n",
        left + w + 200.0,
        top + h + 40.0,
        esc(title),
        esc(title)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>"
    );
    let (rx, ry) = (px(x_ref), py(y_ref));
    let _ = writeln!(
        s,
        "<line x1=\"{rx:.1}\" y1=\"{top}\" x2=\"{rx:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-dasharray=\"3,3\"/><line x1=\"{left}\" y1=\"{ry:.1}\" x2=\"{:.1}\" y2=\"{ry:.1}\" stroke=\"#555\" stroke-dasharray=\"3,3\"/>",
        top + h,
        left + w
    );
    for (v, x) in [(x0, left), (x1, left + w)] {
        let _ = writeln!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{v:.2}</text>",
            top + h + 14.0
        );
    }
    for (v, y) in [(y0, top + h), (y1, top)] {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{v:.2}</text>",
            left - 4.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">{}</text><text x=\"12\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1})\">{}</text>",
        left + w / 2.0,
        top + h + 32.0,
        esc(x_title),
        top + h / 2.0,
        top + h / 2.0,
        esc(y_title)
    );
    for p in points {
        let (x, y) = (px(p.x), py(p.y));
        let _ = writeln!(
            s,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#2e86c1\"><title>{}: {:.3}, {:.3}</title></circle><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            esc(&p.label),
            p.x,
            p.y,
            x + 6.0,
            y + 3.0,
            esc(&p.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_text_is_escaped() {
        let svg = bars("a<b", "x", &[("m&n".into(), -1.0)], 0.0);
        assert!(svg.contains("a&lt;b") && svg.contains("m&amp;n"));
        assert!(!svg.contains("a<b"));
    }

    #[test]
    fn scatter_places_points_inside_the_frame_and_labels_them() {
        let pts = [
            Point {
                label: "static/fbgemm".into(),
                x: 0.1,
                y: 2.5,
            },
            Point {
                label: "a<b".into(),
                x: -0.4,
                y: 0.9,
            },
        ];
        let svg = scatter("t", ("drop", 0.0), ("speedup", 1.0), &pts);
        let circles: Vec<(f64, f64)> = svg
            .split("<circle cx=\"")
            .skip(1)
            .map(|c| {
                let mut it = c.split('"');
                let x: f64 = it.next().unwrap().parse().unwrap();
                let y: f64 = it.nth(1).unwrap().parse().unwrap();
                (x, y)
            })
            .collect();
        assert_eq!(circles.len(), 2);
        for (x, y) in &circles {
            assert!(
                (60.0..=480.0).contains(x) && (30.0..=270.0).contains(y),
                "{x},{y}"
            );
        }
        // Larger speedup is higher up (smaller y); larger drop is further right.
        assert!(circles[0].1 < circles[1].1 && circles[0].0 > circles[1].0);
        assert!(svg.contains("static/fbgemm") && svg.contains("a&lt;b"));
    }
}
