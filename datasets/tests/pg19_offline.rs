//! PG-19 with HF_HUB_OFFLINE=1 and an empty hub cache: one clear sentence, no network access.
//! (One test in its own binary: it sets environment variables.)

use tokenswift_datasets::CorpusSource;

#[test]
fn pg19_offline_without_a_cache_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    // SAFETY: this test binary runs this single test; no other thread reads the environment.
    unsafe {
        std::env::set_var("HF_HUB_OFFLINE", "1");
        std::env::set_var("HF_HOME", home.path());
    }
    let e = CorpusSource::parse("pg19:test")
        .unwrap()
        .documents(&|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("holds no PG-19 Parquet file of split `test`")
            && e.contains("--data DIR")
            && e.contains("--data austen"),
        "{e}"
    );
}
