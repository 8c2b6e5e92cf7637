//! The quantization schemes of DESIGN.md §2 and their fixed properties.

use std::fmt;
use std::str::FromStr;

/// A quantization scheme: how a group of f32 weights becomes codes, a scale and maybe a min.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Symmetric 8-bit: codes in [-127, 127], d = max|x| / 127.
    Int8,
    /// Asymmetric 8-bit: codes in [0, 255], m = min x, d = (max x − m) / 255.
    Int8Asym,
    /// Symmetric 4-bit: codes in [-7, 7], two per byte.
    Int4,
    /// Asymmetric 4-bit: codes in [0, 15], two per byte.
    Int4Asym,
    /// Ternary 2-bit: codes in [-1, 1], d = max|x|, four per byte.
    Int2,
    /// Asymmetric 2-bit: codes in [0, 3], m = min x, d = (max x − m) / 3, four per byte.
    Int2Asym,
    /// GGUF/ggml `Q8_0`: blocks of 32, f16 scale, bit-exact with ggml's reference.
    Q8_0,
    /// GGUF/ggml `Q4_0`: blocks of 32, f16 scale, ggml's nibble order.
    Q4_0,
    /// GGUF/ggml `Q2_K`: super-blocks of 256, 2-bit codes, 4-bit sub-block scales and mins.
    Q2K,
    /// GGUF/ggml `Q3_K`: super-blocks of 256, 3-bit codes, 6-bit sub-block scales.
    Q3K,
    /// GGUF/ggml `Q4_K`: super-blocks of 256, 4-bit codes, 6-bit sub-block scales and mins.
    Q4K,
    /// GGUF/ggml `Q5_K`: super-blocks of 256, 5-bit codes, 6-bit sub-block scales and mins.
    Q5K,
    /// GGUF/ggml `Q6_K`: super-blocks of 256, 6-bit codes, 8-bit sub-block scales.
    Q6K,
    /// 8-bit with an integer zero point: codes in [0, 255], x ≈ d·(q − z) (GPTQ/compressed-tensors).
    Int8Zp,
    /// 4-bit with an integer zero point: codes and z in [0, 15], two codes per byte.
    Int4Zp,
    /// 2-bit with an integer zero point: codes and z in [0, 3], four codes per byte.
    Int2Zp,
}

impl Scheme {
    /// Every scheme, in the order error messages list them.
    pub const ALL: [Scheme; 16] = [
        Scheme::Int8,
        Scheme::Int8Asym,
        Scheme::Int4,
        Scheme::Int4Asym,
        Scheme::Int2,
        Scheme::Int2Asym,
        Scheme::Q8_0,
        Scheme::Q4_0,
        Scheme::Q2K,
        Scheme::Q3K,
        Scheme::Q4K,
        Scheme::Q5K,
        Scheme::Q6K,
        Scheme::Int8Zp,
        Scheme::Int4Zp,
        Scheme::Int2Zp,
    ];

    /// The scheme's SQL name (`int8`, `q4_0`, …).
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Int8 => "int8",
            Scheme::Int8Asym => "int8_asym",
            Scheme::Int4 => "int4",
            Scheme::Int4Asym => "int4_asym",
            Scheme::Int2 => "int2",
            Scheme::Int2Asym => "int2_asym",
            Scheme::Q8_0 => "q8_0",
            Scheme::Q4_0 => "q4_0",
            Scheme::Q2K => "q2_k",
            Scheme::Q3K => "q3_k",
            Scheme::Q4K => "q4_k",
            Scheme::Q5K => "q5_k",
            Scheme::Q6K => "q6_k",
            Scheme::Int8Zp => "int8_zp",
            Scheme::Int4Zp => "int4_zp",
            Scheme::Int2Zp => "int2_zp",
        }
    }

    /// Parses a scheme name, case-insensitively; `None` when unknown (see also [`str::parse`]).
    pub fn parse(s: &str) -> Option<Scheme> {
        s.parse().ok()
    }

    /// The names of every scheme joined by ", ", for error messages.
    pub fn names() -> String {
        Scheme::ALL.map(Scheme::name).join(", ")
    }

    /// Bits per code.
    pub fn bits(self) -> u8 {
        match self {
            Scheme::Int8 | Scheme::Int8Asym | Scheme::Int8Zp | Scheme::Q8_0 => 8,
            Scheme::Q6K => 6,
            Scheme::Q5K => 5,
            Scheme::Int4 | Scheme::Int4Asym | Scheme::Int4Zp | Scheme::Q4_0 | Scheme::Q4K => 4,
            Scheme::Q3K => 3,
            Scheme::Int2 | Scheme::Int2Asym | Scheme::Int2Zp | Scheme::Q2K => 2,
        }
    }

    /// Whether the scheme stores a second value per group in `q.mins`: the float min of the
    /// `_asym` schemes, the integer zero point of the `_zp` schemes (as a float32), and the
    /// super-block `dmin` of the K-quants that have one (q2_k, q4_k, q5_k).
    pub fn is_asymmetric(self) -> bool {
        matches!(
            self,
            Scheme::Int8Asym
                | Scheme::Int8Zp
                | Scheme::Int4Zp
                | Scheme::Int2Zp
                | Scheme::Int4Asym
                | Scheme::Int2Asym
                | Scheme::Q2K
                | Scheme::Q4K
                | Scheme::Q5K
        )
    }

    /// The fixed block size of the ggml schemes; `None` for the others.
    pub fn block_size(self) -> Option<usize> {
        match self {
            Scheme::Q8_0 | Scheme::Q4_0 => Some(32),
            Scheme::Q2K | Scheme::Q3K | Scheme::Q4K | Scheme::Q5K | Scheme::Q6K => Some(256),
            _ => None,
        }
    }

    /// Whether the scheme is one of ggml's K-quants, whose codes are ggml's super-block bytes.
    pub fn is_k_quant(self) -> bool {
        matches!(
            self,
            Scheme::Q2K | Scheme::Q3K | Scheme::Q4K | Scheme::Q5K | Scheme::Q6K
        )
    }

    /// Whether `q.mins` holds integer zero points (`x ≈ d·(q − z)`): the `_zp` schemes.
    pub fn has_zero_point(self) -> bool {
        matches!(self, Scheme::Int8Zp | Scheme::Int4Zp | Scheme::Int2Zp)
    }

    /// Bytes of packed codes for `numel` elements (for the K-quants, whole super-blocks of ggml
    /// bytes: `numel` must be a multiple of 256).
    pub fn code_bytes(self, numel: usize) -> usize {
        match self {
            Scheme::Q2K => numel / 256 * 84,
            Scheme::Q3K => numel / 256 * 110,
            Scheme::Q4K => numel / 256 * 144,
            Scheme::Q5K => numel / 256 * 176,
            Scheme::Q6K => numel / 256 * 210,
            _ => match self.bits() {
                8 => numel,
                4 => numel.div_ceil(2),
                _ => numel.div_ceil(4),
            },
        }
    }
}

/// An unknown scheme name; its message lists the valid ones (the one text every front end shows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected one of {names}, got '{given}'", names = Scheme::names())]
pub struct UnknownScheme {
    /// The name that was given.
    pub given: String,
}

impl FromStr for Scheme {
    type Err = UnknownScheme;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        Scheme::ALL
            .into_iter()
            .find(|scheme| scheme.name().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| UnknownScheme {
                given: s.to_string(),
            })
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_every_name() {
        for s in Scheme::ALL {
            assert_eq!(Scheme::parse(s.name()), Some(s));
            assert_eq!(Scheme::parse(&s.name().to_uppercase()), Some(s));
        }
        assert_eq!(Scheme::parse("int3"), None);
        assert_eq!(
            "int3".parse::<Scheme>().map_err(|e| e.to_string()),
            Err(
                "expected one of int8, int8_asym, int4, int4_asym, int2, int2_asym, q8_0, q4_0, \
                 q2_k, q3_k, q4_k, q5_k, q6_k, int8_zp, int4_zp, int2_zp, got 'int3'"
                    .to_string()
            )
        );
        assert_eq!(
            Scheme::names(),
            "int8, int8_asym, int4, int4_asym, int2, int2_asym, q8_0, q4_0, q2_k, q3_k, q4_k, \
             q5_k, q6_k, int8_zp, int4_zp, int2_zp"
        );
    }

    #[test]
    fn code_bytes_pack_nibbles() {
        assert_eq!(Scheme::Int8.code_bytes(5), 5);
        assert_eq!(Scheme::Int4.code_bytes(5), 3);
        assert_eq!(Scheme::Q4_0.code_bytes(64), 32);
        assert_eq!(Scheme::Int2.code_bytes(5), 2);
    }
}

/// How a linear scheme chooses each group's scale (and min or zero point). The codes, and every
/// reader of them, are the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Method {
    /// Round to nearest over the group's whole range: d = max|x| / q, or (max − min) / q with
    /// the min (or integer zero point) at the range's bottom. The default.
    #[default]
    Rtn,
    /// Per group, a search over candidate scales (the range clipped by up to 30 %), each refit
    /// by least squares, and the zero point's neighbours: the candidate of least squared error
    /// wins, RTN's own among them, so no group is ever worse than RTN. For q4_k: ggml's
    /// reference blocks with better sub-block scales and mins, in the same layout.
    Search,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 2] = [Method::Rtn, Method::Search];

    /// The method's SQL and CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Search => "search",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown method '{s}': expected 'rtn' or 'search'"))
    }
}
