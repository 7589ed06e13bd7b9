//! The common-password list (`common_passwords.txt`, data kept out of the code): new
//! passwords on it are refused. Compared case-insensitively.

use std::{collections::HashSet, sync::LazyLock};

const LIST: &str = include_str!("common_passwords.txt");

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| entries().collect());

fn entries() -> impl Iterator<Item = &'static str> {
    LIST.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// True when `password` (case-insensitively) is on the list.
pub fn is_common(password: &str) -> bool {
    COMMON.contains(password.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_lowercase_long_and_found() {
        let all: Vec<_> = entries().collect();
        assert_eq!(all.len(), 1517);
        assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
        assert!(
            all.iter()
                .all(|p| p.to_lowercase() == *p && p.chars().count() >= 10)
        );
        assert!(is_common("Password123"));
        assert!(is_common("QWERTYUIOP"));
        assert!(!is_common("violet kettle under moonlight"));
    }
}
