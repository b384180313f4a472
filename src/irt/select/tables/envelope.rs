//! The envelopes of the buckets (module doc of [`super`]): per bucket and block of nodes,
//! the largest information (information family) or the largest divergence from any pivot
//! (divergence family) over the bucket's items, with the plain formula's rounding, so that a
//! step can bound a bucket's criterion without visiting its items; and the node blocks and
//! pivots they are taken over. The variance family's envelope is in `variance.rs`.

use super::*;

impl SelectionTables {
    /// The envelope of every bucket of `group` (module doc).
    pub(super) fn envelope(&self, group: &Group, bank: &[Item]) -> Vec<f64> {
        let q = self.nodes.len();
        let blocks = &self.blocks;
        match self.key.family {
            Family::Information => {
                let mut env = Vec::with_capacity(group.buckets.len() * blocks.len());
                for &(start, end) in &group.buckets {
                    for &(b0, b1) in blocks {
                        let mut max = 0.0_f64;
                        for pos in start as usize..end as usize {
                            let row = &group.rows[pos * group.stride..][..q];
                            for &v in &row[b0..b1] {
                                max = max.max(v);
                            }
                        }
                        env.push(max);
                    }
                }
                env
            }
            Family::Divergence => {
                let c = group.categories;
                let ln_c = (c as f64).ln();
                let h = self.pivots.len();
                let nb = blocks.len();
                let mut env = vec![0.0_f64; group.buckets.len() * h * nb];
                let mut probs = [0.0; MAX_CATEGORIES];
                let mut log_p = [0.0; MAX_CATEGORIES];
                // Largest |ln P_jgk| over the categories, per node.
                let mut worst = vec![0.0_f64; q];
                for (b, &(start, end)) in group.buckets.iter().enumerate() {
                    let bucket_env = &mut env[b * h * nb..(b + 1) * h * nb];
                    for pos in start as usize..end as usize {
                        let rows = &group.rows[pos * group.stride..][..group.stride];
                        for (g, w) in worst.iter_mut().enumerate() {
                            *w = (0..c).map(|k| rows[k * q + g].abs()).fold(0.0, f64::max);
                        }
                        let item = &bank[group.ids[pos] as usize];
                        for (pivot, env_row) in self.pivots.iter().zip(bucket_env.chunks_mut(nb)) {
                            let m = grid::probabilities(item, *pivot, self.scaling, &mut probs);
                            debug_assert_eq!(m, c);
                            for k in 0..c {
                                log_p[k] = probs[k].ln();
                            }
                            for (slot, &(b0, b1)) in env_row.iter_mut().zip(blocks) {
                                for g in b0..b1 {
                                    let (mut kl, mut ce) = (0.0, 0.0);
                                    for k in 0..c {
                                        let p = probs[k];
                                        if p != 0.0 {
                                            let lq = rows[k * q + g];
                                            kl += p * (log_p[k] - lq);
                                            ce += p * (log_p[k].abs() + lq.abs());
                                        }
                                    }
                                    // The plain formula's rounding at θ̂ and here.
                                    let value = kl + ROUNDING * (1.0 + ln_c + ce + worst[g]);
                                    // NaN (never for finite rows) poisons the bound.
                                    *slot = if value.is_nan() {
                                        f64::INFINITY
                                    } else {
                                        slot.max(value)
                                    };
                                }
                            }
                        }
                    }
                }
                env
            }
            // Polytomous buckets' bounds (same formula) prune next to nothing
            // (the spread of their thresholds), so they are not built.
            Family::Variance if group.categories == 2 => self.variance_envelope(group, bank),
            Family::Variance | Family::VarianceJeffreys => Vec::new(),
        }
    }
}

/// Consecutive node ranges, at most [`MAX_BLOCKS`] of them, covering `0..q`.
pub(super) fn node_blocks(q: usize) -> Vec<(usize, usize)> {
    let size = q.div_ceil(MAX_BLOCKS).max(1);
    (0..q)
        .step_by(size)
        .map(|start| (start, (start + size).min(q)))
        .collect()
}

/// Number of pivots of a grid of `q` nodes: twice as fine as the nodes, at
/// most [`MAX_PIVOTS`].
pub(super) fn pivot_count(q: usize) -> usize {
    (2 * q.saturating_sub(1) + 1).clamp(2, MAX_PIVOTS)
}

/// Equally spaced pivots from `lo` to `hi` (the last exactly `hi`).
pub(super) fn pivot_grid(lo: f64, hi: f64, q: usize) -> Vec<f64> {
    let n = pivot_count(q);
    let step = (hi - lo) / (n - 1) as f64;
    (0..n)
        .map(|k| if k + 1 == n { hi } else { lo + k as f64 * step })
        .collect()
}
