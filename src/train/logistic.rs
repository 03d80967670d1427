//! L2-regularized logistic regression on standardized inputs, fitted by Newton's method: the
//! small calibrated models stored in manifests (the perturbation fusion, the LM-surprise rule).
//! Plain f64 arithmetic, deterministic; sized for a handful of inputs and thousands of rows.

/// A fitted model: `p = sigmoid(w · (x − center) / scale + bias)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardized {
    pub center: Vec<f64>,
    /// Standard deviation of each input; 1 for a constant input (which the ridge then zeroes).
    pub scale: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl Standardized {
    /// Fits rows `x` (all the same length) to labels `y` in {0, 1}, minimizing the summed
    /// log-loss plus `l2/2·|w|²` (bias unpenalized).
    pub fn fit(x: &[Vec<f64>], y: &[f64], l2: f64) -> Self {
        let d = x.first().map_or(0, Vec::len);
        let n = x.len().max(1) as f64;
        let mut center = vec![0f64; d];
        let mut scale = vec![0f64; d];
        for row in x {
            for j in 0..d {
                center[j] += row[j] / n;
            }
        }
        for row in x {
            for j in 0..d {
                scale[j] += (row[j] - center[j]).powi(2) / n;
            }
        }
        let scale: Vec<f64> = scale
            .iter()
            .map(|v| if v.sqrt() > 1e-6 { v.sqrt() } else { 1.0 })
            .collect();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|row| (0..d).map(|j| (row[j] - center[j]) / scale[j]).collect())
            .collect();
        let mut w = newton(&z, y, l2);
        let bias = w.pop().unwrap_or(0.0);
        Self {
            center,
            scale,
            weights: w,
            bias,
        }
    }

    /// The model's logit for raw inputs `x`.
    pub fn logit(&self, x: &[f64]) -> f64 {
        x.iter()
            .zip(&self.center)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((v, c), s), w)| w * (v - c) / s)
            .sum::<f64>()
            + self.bias
    }

    /// Moves the bias so that at most `floor(fpr·n)` of the `negatives`' logits reach
    /// `target` (the logit of a decision threshold). The boundary sits halfway between the
    /// last row allowed over it and the first kept under it, so rounding (the stored rule is
    /// f32) cannot carry a row across; ties at the boundary are all kept under it. `false`
    /// (bias untouched) without negatives or with `fpr` outside [0, 1).
    pub fn place_for_fpr(&mut self, negatives: &[Vec<f64>], fpr: f64, target: f64) -> bool {
        if negatives.is_empty() || !(0.0..1.0).contains(&fpr) {
            return false;
        }
        let mut z: Vec<f64> = negatives.iter().map(|x| self.logit(x)).collect();
        z.sort_by(|a, b| b.total_cmp(a));
        // The epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from losing a row.
        let allowed = ((fpr * z.len() as f64 + 1e-9).floor() as usize).min(z.len() - 1);
        let kept = z[allowed];
        let boundary = match z[..allowed].iter().rev().find(|&&v| v > kept) {
            Some(&over) => 0.5 * (over + kept),
            None => kept + 1.0,
        };
        self.bias += target - boundary;
        true
    }
}

/// Weights then bias of the logistic model on already standardized rows.
fn newton(rows: &[Vec<f64>], y: &[f64], l2: f64) -> Vec<f64> {
    let d = rows.first().map_or(0, Vec::len);
    let dim = d + 1;
    let mut w = vec![0f64; dim];
    for _ in 0..50 {
        let mut g = vec![0f64; dim];
        let mut h = vec![vec![0f64; dim]; dim];
        for (x, &t) in rows.iter().zip(y) {
            let xb: Vec<f64> = x.iter().copied().chain([1.0]).collect();
            let z: f64 = xb.iter().zip(&w).map(|(a, b)| a * b).sum();
            let p = 1.0 / (1.0 + (-z).exp());
            let s = (p * (1.0 - p)).max(1e-12);
            for a in 0..dim {
                g[a] += (p - t) * xb[a];
                for b in 0..dim {
                    h[a][b] += s * xb[a] * xb[b];
                }
            }
        }
        for j in 0..d {
            g[j] += l2 * w[j];
            h[j][j] += l2;
        }
        h[d][d] += 1e-9;
        let Some(step) = solve(h, g) else { break };
        let mut moved = 0.0;
        for j in 0..dim {
            w[j] -= step[j];
            moved += step[j].abs();
        }
        if moved < 1e-9 {
            break;
        }
    }
    w
}

/// Solves `a·x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let d = b.len();
    for c in 0..d {
        let p = (c..d).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-15 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..d {
            let f = a[r][c] / a[c][c];
            let (upper, lower) = a.split_at_mut(r);
            for (x, p) in lower[0][c..].iter_mut().zip(&upper[c][c..]) {
                *x -= f * p;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0f64; d];
    for r in (0..d).rev() {
        let s: f64 = (r + 1..d).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn solve_matches_a_known_system() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!(
            (x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12,
            "{x:?}"
        );
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }

    #[test]
    fn recovers_a_known_logistic_model() {
        // Labels drawn from p = sigmoid(2·x0 − 1); x1 is noise, x2 constant.
        let mut rng = Rng::new(11);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..4000 {
            let x0 = rng.next_f64() * 4.0 - 2.0;
            let x1 = rng.next_f64();
            let p = 1.0 / (1.0 + (-(2.0 * x0 - 1.0)).exp());
            y.push(f64::from(u8::from(rng.next_f64() < p)));
            x.push(vec![x0, x1, 3.0]);
        }
        let m = Standardized::fit(&x, &y, 1e-3);
        let slope = m.weights[0] / m.scale[0];
        assert!((slope - 2.0).abs() < 0.25, "{m:?}");
        assert!((m.logit(&[0.0, 0.5, 3.0]) + 1.0).abs() < 0.25, "{m:?}");
        assert!(
            m.weights[1].abs() < 0.2 && m.weights[2].abs() < 1e-9,
            "{m:?}"
        );
        assert_eq!(m.scale[2], 1.0);
    }

    #[test]
    fn placing_for_an_fpr_flags_at_most_its_share_of_negatives() {
        let mut m = Standardized {
            center: vec![0.0],
            scale: vec![1.0],
            weights: vec![1.0],
            bias: 0.0,
        };
        let flagged =
            |m: &Standardized, neg: &[Vec<f64>]| neg.iter().filter(|x| m.logit(x) >= 0.7).count();
        let neg: Vec<Vec<f64>> = (0..200).map(|i| vec![f64::from(i)]).collect();
        for (fpr, want) in [(0.0, 0), (0.005, 1), (0.01, 2), (0.05, 10), (0.999, 199)] {
            assert!(m.place_for_fpr(&neg, fpr, 0.7));
            assert_eq!(flagged(&m, &neg), want, "fpr {fpr}");
        }
        // Ties at the boundary stay under it: 3 rows share the top value, 1 may be flagged.
        let tied: Vec<Vec<f64>> = [5.0, 5.0, 5.0, 1.0, 0.0].map(|v| vec![v]).to_vec();
        assert!(m.place_for_fpr(&tied, 0.2, 0.7));
        assert_eq!(flagged(&m, &tied), 0);
        assert!(m.place_for_fpr(&tied, 0.6, 0.7));
        assert_eq!(flagged(&m, &tied), 3);
        let bias = m.bias;
        assert!(!m.place_for_fpr(&[], 0.1, 0.7));
        assert!(!m.place_for_fpr(&tied, 1.0, 0.7));
        assert_eq!(m.bias, bias);
    }
}
