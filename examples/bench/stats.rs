//! Statistics and formatting of the numbers in the tables.

/// The median; NaN for no samples.
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile: with fewer than 100 runs, p99 is the worst run.
pub fn pct(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Seconds as µs, ms or s with three significant digits or so.
pub fn fmt_time(s: f64) -> String {
    if s.is_nan() {
        "n/a".into()
    } else if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else if s >= 0.001 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// Bytes as KiB, MiB or GiB.
pub fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// A ratio as "87×" or "1.9×".
pub fn fmt_factor(r: f64) -> String {
    if r >= 10.0 { format!("{r:.0}×") } else { format!("{r:.1}×") }
}

/// `base / value` for "lower is better" measures: "87× faster" or "1.9× slower".
pub fn ratio_lower(base: f64, value: f64, better: &str, worse: &str) -> String {
    if value <= 0.0 || base.is_nan() || value.is_nan() {
        return if value <= 0.0 && base > 0.0 { format!("∞ ({better})") } else { "n/a".into() };
    }
    let r = base / value;
    if (r - 1.0).abs() < 0.05 {
        "≈ same".into()
    } else if r > 1.0 {
        format!("{} {better}", fmt_factor(r))
    } else {
        format!("{} {worse}", fmt_factor(1.0 / r))
    }
}

/// An integer with thousands separators.
pub fn with_commas(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}
