//! Distinct-n (DESIGN §7): unique n-grams / total n-grams over a sequence of units (token ids, or
//! words = the text split on whitespace, nothing else normalised).

use std::collections::HashSet;
use std::hash::Hash;

/// Distinct-n of `units`; 0 when there is no n-gram at all.
pub fn distinct_n<T: Hash + Eq>(units: &[T], n: usize) -> f64 {
    if n == 0 || units.len() < n {
        return 0.0;
    }
    let total = units.len() - n + 1;
    let unique: HashSet<&[T]> = units.windows(n).collect();
    unique.len() as f64 / total as f64
}

/// Distinct-1..4.
pub fn distinct_1_to_4<T: Hash + Eq>(units: &[T]) -> [f64; 4] {
    [1, 2, 3, 4].map(|n| distinct_n(units, n))
}

/// Words of a text: split on whitespace, no other normalisation.
pub fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_examples() {
        // a b a b c: 1-grams 5, unique {a,b,c} = 3 → 0.6; 2-grams ab ba ab bc: unique 3/4;
        // 3-grams aba bab abc: 3/3; 4-grams abab babc: 2/2.
        let t = ["a", "b", "a", "b", "c"];
        assert_eq!(distinct_1_to_4(&t), [0.6, 0.75, 1.0, 1.0]);
        // A constant sequence: one unique n-gram of each size.
        let z = [7u32; 10];
        assert_eq!(distinct_n(&z, 1), 0.1);
        assert_eq!(distinct_n(&z, 4), 1.0 / 7.0);
        // Too short.
        assert_eq!(distinct_n(&[1u32, 2], 3), 0.0);
    }

    #[test]
    fn words_split_on_whitespace_only() {
        assert_eq!(
            words("The cat,  the\tcat.\nThe"),
            ["The", "cat,", "the", "cat.", "The"]
        );
        // "The" and "the" differ; punctuation stays attached.
        assert_eq!(distinct_n(&words("The cat the cat"), 1), 0.75);
    }
}
