//! Branch-free reductions over a group: largest magnitude and min/max, with the finiteness check
//! folded in. They work on the bit patterns as integers, which the compiler vectorizes.

use super::KernelError;

const ABS_MASK: u32 = 0x7fff_ffff;
const EXP_MASK: u32 = 0x7f80_0000;

/// The error for the first non-finite element of `g`, whose first element has index `offset`.
#[cold]
fn first_non_finite(g: &[f32], offset: usize) -> KernelError {
    let (i, &value) = g
        .iter()
        .enumerate()
        .find(|(_, x)| !x.is_finite())
        .unwrap_or((0, &f32::NAN));
    KernelError::NonFinite {
        index: offset + i,
        value,
    }
}

/// The largest |x| in `g` (0 when empty), or an error naming the first NaN or infinity.
#[inline(always)]
pub fn abs_max(g: &[f32], offset: usize) -> Result<f32, KernelError> {
    let m = g.iter().fold(0u32, |m, x| m.max(x.to_bits() & ABS_MASK));
    if m >= EXP_MASK {
        return Err(first_non_finite(g, offset));
    }
    Ok(f32::from_bits(m))
}

/// Maps finite f32 bits to an i32 with the same order (an involution).
#[inline(always)]
fn ordered(bits: u32) -> i32 {
    let k = bits as i32;
    k ^ ((k >> 31) & ABS_MASK as i32)
}

/// The (min, max) of `g` ((0, 0) when empty), or an error naming the first NaN or infinity.
/// A NaN orders above +inf or below -inf, so the two folds also catch every non-finite value.
#[inline(always)]
pub fn min_max(g: &[f32], offset: usize) -> Result<(f32, f32), KernelError> {
    if g.is_empty() {
        return Ok((0.0, 0.0));
    }
    let (lo, hi) = g.iter().fold((i32::MAX, i32::MIN), |(lo, hi), x| {
        let k = ordered(x.to_bits());
        (lo.min(k), hi.max(k))
    });
    if lo <= ordered(f32::NEG_INFINITY.to_bits()) || hi >= ordered(f32::INFINITY.to_bits()) {
        return Err(first_non_finite(g, offset));
    }
    let back = |k: i32| f32::from_bits(ordered(k as u32) as u32);
    Ok((back(lo), back(hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abs_max_and_min_max() {
        let g = [1.5, -3.25, 0.0, -0.0, 2.0];
        assert_eq!(abs_max(&g, 0), Ok(3.25));
        assert_eq!(min_max(&g, 0), Ok((-3.25, 2.0)));
        assert_eq!(min_max(&[-1.0, -2.0], 0), Ok((-2.0, -1.0)));
        assert_eq!(
            min_max(&[f32::MAX, -f32::MAX], 0),
            Ok((-f32::MAX, f32::MAX))
        );
        assert_eq!(abs_max(&[], 0), Ok(0.0));
    }

    #[test]
    fn non_finite_is_named_with_its_index() {
        let g = [1.0, 2.0, f32::NAN, f32::INFINITY];
        let e = abs_max(&g, 10).unwrap_err();
        assert!(matches!(e, KernelError::NonFinite { index: 12, value } if value.is_nan()));
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY] {
            assert!(min_max(&[1.0, bad, -1.0], 0).is_err(), "{bad}");
        }
        let e = min_max(&[0.0, f32::NEG_INFINITY], 5).unwrap_err();
        assert_eq!(
            e,
            KernelError::NonFinite {
                index: 6,
                value: f32::NEG_INFINITY
            }
        );
    }
}
