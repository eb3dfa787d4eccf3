//! The compiled-in library is exactly `manifests/library/`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use devplane_api::constants::LIBRARY_NAMESPACE;
use devplane_api::library;

#[test]
fn every_library_file_is_compiled_in() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests/library");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("read manifests/library")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let compiled: BTreeSet<String> = library::FILES
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(
        on_disk, compiled,
        "add new library files to controller/api/src/library.rs"
    );
}

#[test]
fn the_library_holds_at_least_ten_models_in_the_library_namespace() {
    let models = library::models().expect("library parses");
    assert!(models.len() >= 10, "{} models", models.len());
    for model in &models {
        assert_eq!(model.metadata.namespace.as_deref(), Some(LIBRARY_NAMESPACE));
    }
}
