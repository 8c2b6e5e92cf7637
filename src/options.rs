//! The one options model: what `quantize` is asked to do, and the only place its options are
//! checked. The SQL functions, the command line and Python all call these checks, and each front
//! end only prefixes the message with its own name for the option (`'quantize' argument 3
//! (group_size)`, `--group-size`, `group_size`), so the same mistake reads the same everywhere.

use std::fmt;

use crate::kernels::{Method, Scheme};

/// The scheme used when none is given.
pub const DEFAULT_SCHEME: Scheme = Scheme::Int8;
/// The group size used when none is given. Schemes with fixed blocks (q8_0, q4_0) take it to
/// mean their block.
pub const DEFAULT_GROUP_SIZE: usize = 128;

/// How weights are grouped for one scale each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// One group per tensor.
    PerTensor,
    /// Contiguous groups of this many elements.
    Size(usize),
    /// One group per output channel: the innermost dimension, `shape[-1]`.
    PerChannel,
    /// This many contiguous groups per tensor: groups of ceil(numel / n) (the seed's
    /// `num_time_groups`).
    Count(usize),
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::PerTensor => f.write_str("0 (one group per tensor)"),
            Group::Size(n) => write!(f, "{n}"),
            Group::PerChannel => f.write_str("per_channel"),
            Group::Count(n) => write!(f, "{n} groups"),
        }
    }
}

/// The option a mistake is about; each front end names it in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionName {
    /// The scheme name.
    Scheme,
    /// The group size (or per-channel, or a number of groups).
    GroupSize,
    /// The cosine similarity target of `quantize_to_target`.
    MinCosine,
    /// How the linear schemes choose their scales (`rtn`, `search`).
    Method,
}

impl OptionName {
    /// The option's name in SQL and Python (`group_size`).
    pub fn name(self) -> &'static str {
        match self {
            OptionName::Scheme => "scheme",
            OptionName::GroupSize => "group_size",
            OptionName::MinCosine => "min_cosine",
            OptionName::Method => "method",
        }
    }

    /// The option's command-line flag (`--group-size`).
    pub fn flag(self) -> &'static str {
        match self {
            OptionName::Scheme => "--scheme",
            OptionName::GroupSize => "--group-size",
            OptionName::MinCosine => "--min-cosine",
            OptionName::Method => "--method",
        }
    }
}

/// A bad option: which one, and what was expected and given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", option.name())]
pub struct OptionError {
    /// The option.
    pub option: OptionName,
    /// What was expected and what came, without the option's name.
    pub message: String,
}

impl OptionError {
    fn new(option: OptionName, message: impl fmt::Display) -> Self {
        Self {
            option,
            message: message.to_string(),
        }
    }
}

/// Parses a scheme name.
pub fn parse_scheme(s: &str) -> Result<Scheme, OptionError> {
    s.parse()
        .map_err(|e| OptionError::new(OptionName::Scheme, e))
}

/// Parses a method name (`rtn`, `search`).
pub fn parse_method(s: &str) -> Result<Method, OptionError> {
    s.parse()
        .map_err(|e: String| OptionError::new(OptionName::Method, e))
}

/// A group size as given: 0 is one group per tensor, n > 0 groups of n elements.
pub fn parse_group_size(n: i64) -> Result<Group, OptionError> {
    match n {
        0 => Ok(Group::PerTensor),
        n if n > 0 && n <= i64::from(i32::MAX) => Ok(Group::Size(n as usize)),
        n => Err(OptionError::new(
            OptionName::GroupSize,
            format!("expected 0 (one group per tensor) or a positive number of elements, got {n}"),
        )),
    }
}

/// Checks that a scheme with fixed blocks is asked for its block (or the default group size).
pub fn check_block(scheme: Scheme, group: Group) -> Result<(), OptionError> {
    let Some(block) = scheme.block_size() else {
        return Ok(());
    };
    match group {
        Group::Size(n) if n == block || n == DEFAULT_GROUP_SIZE => Ok(()),
        other => Err(OptionError::new(
            OptionName::GroupSize,
            format!("{scheme} uses fixed blocks of {block}, got {other}"),
        )),
    }
}

/// Checks a cosine similarity target.
pub fn check_min_cosine(t: f64) -> Result<(), OptionError> {
    if (-1.0..=1.0).contains(&t) {
        Ok(())
    } else {
        Err(OptionError::new(
            OptionName::MinCosine,
            format!("expected a cosine similarity between -1 and 1, got {t}"),
        ))
    }
}

/// What `quantize` does to a table: one scheme and grouping for every row, or a cosine target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantizeOptions {
    /// The scheme (ignored when `min_cosine` is set).
    pub scheme: Scheme,
    /// The grouping.
    pub group: Group,
    /// When set, each row gets the narrowest of int2/int4/int8 that reaches this cosine
    /// similarity (`quantize_to_target`) and `scheme` is ignored.
    pub min_cosine: Option<f64>,
    /// Threads for one large tensor (0: every core).
    pub threads: usize,
    /// How the linear schemes choose their scales.
    pub method: Method,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            scheme: DEFAULT_SCHEME,
            group: Group::Size(DEFAULT_GROUP_SIZE),
            min_cosine: None,
            threads: 0,
            method: Method::Rtn,
        }
    }
}

impl QuantizeOptions {
    /// Checks the options against each other: the ggml blocks, the cosine range, a positive
    /// number of groups. (Per-channel's need for a `shape` column is checked against the table,
    /// against the table by the Arrow layer.)
    pub fn validate(&self) -> Result<(), OptionError> {
        match self.min_cosine {
            Some(t) => check_min_cosine(t)?,
            None => check_block(self.scheme, self.group)?,
        }
        if self.group == Group::Count(0) {
            return Err(OptionError::new(
                OptionName::GroupSize,
                "expected a positive number of groups, got 0",
            ));
        }
        Ok(())
    }

    /// The group size a row of `numel` elements is quantized with, given its innermost
    /// dimension (per-channel) when the table has shapes.
    pub fn group_size(&self, numel: usize, inner: Option<usize>) -> Option<usize> {
        match self.group {
            Group::PerTensor => Some(0),
            Group::Size(n) => Some(n),
            Group::PerChannel => inner,
            Group::Count(n) => Some(numel.div_ceil(n.max(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_option_and_the_value() {
        let opts = |scheme, group, min_cosine| QuantizeOptions {
            scheme,
            group,
            min_cosine,
            threads: 1,
            method: Method::Rtn,
        };
        assert_eq!(opts(Scheme::Int4, Group::Size(64), None).validate(), Ok(()));
        assert_eq!(
            opts(Scheme::Q4_0, Group::Size(128), None).validate(),
            Ok(())
        );
        assert_eq!(
            opts(Scheme::Q4_0, Group::Size(64), None)
                .validate()
                .map_err(|e| e.to_string()),
            Err("group_size: q4_0 uses fixed blocks of 32, got 64".into())
        );
        assert_eq!(
            opts(Scheme::Q8_0, Group::PerChannel, None)
                .validate()
                .map_err(|e| e.message),
            Err("q8_0 uses fixed blocks of 32, got per_channel".into())
        );
        assert_eq!(
            opts(Scheme::Int8, Group::Size(8), Some(1.5))
                .validate()
                .map_err(|e| e.to_string()),
            Err("min_cosine: expected a cosine similarity between -1 and 1, got 1.5".into())
        );
        assert_eq!(
            parse_group_size(-4).map_err(|e| e.to_string()),
            Err(
                "group_size: expected 0 (one group per tensor) or a positive number of \
                 elements, got -4"
                    .into()
            )
        );
        assert_eq!(parse_group_size(0), Ok(Group::PerTensor));
        assert_eq!(
            parse_scheme("int3").map_err(|e| e.option),
            Err(OptionName::Scheme)
        );
    }

    #[test]
    fn group_sizes_per_row() {
        let mut o = QuantizeOptions::default();
        assert_eq!(o.group_size(1000, None), Some(128));
        o.group = Group::PerChannel;
        assert_eq!(o.group_size(1000, Some(10)), Some(10));
        assert_eq!(o.group_size(1000, None), None);
        o.group = Group::Count(3);
        assert_eq!(o.group_size(1000, None), Some(334));
    }
}
