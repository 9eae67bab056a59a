//! Kubernetes resource quantities (`100m`, `0.5`, `64Mi`, `1G`, `1e3`) as the numbers the
//! kubelet computes with: millicores for cpu, bytes for memory, plain counts otherwise.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
#[error("invalid quantity {0:?}: expected a number with an optional suffix (m, k, Ki, M, Mi, G, Gi, T, Ti, P, Pi, E, Ei, or an exponent)")]
pub struct InvalidQuantity(pub String);

/// The quantity as a float in base units (cpu: cores, memory: bytes).
pub fn parse(s: &str) -> Result<f64, InvalidQuantity> {
    let bad = || InvalidQuantity(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| bad())?;
            10f64.powi(exp)
        }
        _ => return Err(bad()),
    };
    let v = n * mult;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok(v)
}

/// Millicores, rounded up as the API server does (`0.0001` is 1m).
pub fn milli_cpu(s: &str) -> Result<i64, InvalidQuantity> {
    Ok((parse(s)? * 1000.0).ceil() as i64)
}

/// Bytes (memory, storage), rounded up.
pub fn bytes(s: &str) -> Result<i64, InvalidQuantity> {
    Ok(parse(s)?.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory() {
        assert_eq!(milli_cpu("100m"), Ok(100));
        assert_eq!(milli_cpu("0.5"), Ok(500));
        assert_eq!(milli_cpu("2"), Ok(2000));
        assert_eq!(bytes("64Mi"), Ok(64 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1e3"), Ok(1000));
        assert!(bytes("12Zi").is_err());
        assert!(bytes("").is_err());
        assert!(bytes("-1").is_err());
        assert!(milli_cpu("abc").is_err());
    }
}
