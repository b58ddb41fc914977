//! Small descriptive statistics for the experiments.

/// Mean of the values (NaN for none).
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Population standard deviation.
pub fn std(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt()
}

/// Fraction of values exactly zero.
pub fn frac_zero(v: &[f64]) -> f64 {
    v.iter().filter(|x| **x == 0.0).count() as f64 / v.len() as f64
}

/// The `p`-th percentile (0..=100) by linear interpolation between order statistics.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let pos = p / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// A number for the report: 3 significant digits, scientific when small or large.
pub fn fmt(v: f64) -> String {
    super::plot::fmt_num(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptive_statistics() {
        let v = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(mean(&v), 1.5);
        assert!((std(&v) - 1.25f64.sqrt()).abs() < 1e-15);
        assert_eq!(frac_zero(&v), 0.25);
        assert_eq!(percentile(&v, 50.0), 1.5);
        assert_eq!(percentile(&v, 100.0), 3.0);
        assert!(percentile(&[f64::NAN], 50.0).is_nan());
    }
}
