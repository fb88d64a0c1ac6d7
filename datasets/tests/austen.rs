//! The real offline corpus: fetched with apt-get once (cached under `$TOKENSWIFT_HOME`), read
//! from the R database without R.

use tokenswift_datasets::corpus::{AUSTEN_NOVELS, austen_novels};

#[test]
fn austen_novels_read_from_the_r_database() {
    let docs = austen_novels(&|m| eprintln!("{m}")).expect("offline corpus");
    assert_eq!(docs.len(), 6);
    for (d, name) in docs.iter().zip(AUSTEN_NOVELS) {
        assert_eq!(d.name, name);
        assert!(d.text.len() > 300_000, "{name}: {} bytes", d.text.len());
    }
    let pride = &docs[1].text;
    assert!(pride.contains("It is a truth universally acknowledged"));
    let persuasion = &docs[5].text;
    assert!(persuasion.contains("Sir Walter Elliot, of Kellynch Hall"));
}
