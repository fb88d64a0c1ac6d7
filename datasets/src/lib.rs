//! tokenswift-datasets: corpora and prompt sets (PG-19 through the hub when online, local
//! corpora, and the offline corpus shipped by a registry package). Filled by the train-heads issue;
//! for now it ships the README's default prompt.

/// The opening of *Pride and Prejudice* (public domain), the default long-generation prompt.
pub const DEFAULT_PROMPT: &str = include_str!("../prompts/pride-and-prejudice.txt");

#[cfg(test)]
mod tests {
    #[test]
    fn default_prompt_is_present() {
        assert!(super::DEFAULT_PROMPT.starts_with("It is a truth universally acknowledged"));
    }
}
