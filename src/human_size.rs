//! Byte counts for people: the image listing, the run summary, size limits in messages.

/// `512 B`, `1.5 KiB`, `300.0 MiB`, `5.0 GiB`, `1.0 TiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(300 << 20), "300.0 MiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
        assert_eq!(human_size(1 << 40), "1.0 TiB");
    }
}
