//! Zero-edit tracking: plain `#[instrument]` functions tracked through builder rules alone.

use tracing_progress::{Builder, Status, TrackRule};

use crate::support::{node, only_finished, shape, with_layer};

/// A module of ordinary instrumented code: no `progress.*` fields anywhere.
mod app {
    #[derive(Debug)]
    pub struct Song {
        pub title: &'static str,
    }

    #[tracing::instrument(skip(songs))]
    pub fn process_setlist(name: &str, songs: &[Song]) {
        for song in songs {
            process_song(song.title);
        }
    }

    #[tracing::instrument]
    pub fn process_song(title: &str) {
        for action in ["LoadAudio", "DetectOnsets"] {
            execute_action(action);
        }
    }

    #[tracing::instrument]
    pub fn execute_action(action: &str) {
        helper();
    }

    // Not matched by any rule: transparent.
    #[tracing::instrument]
    fn helper() {}
}

#[test]
fn plain_instrumented_code_is_tracked_by_rules() {
    let builder = Builder::new()
        .track(
            TrackRule::span("process_setlist")
                .level("setlist")
                .name_field("name")
                .operation("setlist_processing"),
        )
        .track(
            TrackRule::span("process_song")
                .level("song")
                .name_field("title"),
        )
        .track(
            TrackRule::span("execute_action")
                .level("action")
                .name_field("action"),
        );
    let (store, ()) = with_layer(builder, |_| {
        let songs = [
            app::Song { title: "intro.wav" },
            app::Song { title: "outro.wav" },
        ];
        app::process_setlist("Friday", &songs);
    });
    let op = only_finished(&store);
    assert_eq!(&*op.operation_type, "setlist_processing");
    assert_eq!(
        shape(&op.root),
        "Friday[completed](intro.wav[completed](LoadAudio[completed],DetectOnsets[completed]),\
         outro.wav[completed](LoadAudio[completed],DetectOnsets[completed]))"
    );
    let song = node(&op, "intro.wav");
    assert_eq!(&*song.level_type, "song");
    assert_eq!(&*song.span_name, "process_song");
    assert_eq!(song.current, 2);
    assert!(song.target.contains("rules::app"));
    assert_eq!(op.status, Status::Completed);
}

#[test]
fn target_rule_tracks_a_whole_module() {
    let builder = Builder::new().track(TrackRule::target("progress::rules::app"));
    let (store, ()) = with_layer(builder, |_| app::process_song("x"));
    let op = only_finished(&store);
    // every span of the module, the helper included, level type = span name
    assert_eq!(&*op.root.level_type, "process_song");
    assert_eq!(op.metrics.nodes_seen, 5);
}

#[test]
fn invalid_rules_are_refused_with_a_clear_error() {
    let err = Builder::new()
        .track(TrackRule::target(""))
        .build::<tracing_subscriber::Registry>()
        .unwrap_err();
    assert!(err.to_string().contains("target prefix"), "{err}");
    let err = Builder::new()
        .max_depth(0)
        .build::<tracing_subscriber::Registry>()
        .unwrap_err();
    assert!(err.to_string().contains("max_depth"), "{err}");
}

/// Ordinary code again: an import with a file count and a path argument.
mod importer {
    #[tracing::instrument(skip(files))]
    pub fn import(dir: std::path::PathBuf, n_files: usize, files: &[&str]) {
        for f in files {
            decode(f);
        }
    }

    #[tracing::instrument]
    pub fn decode(file: &str) {}

    pub mod legacy {
        #[tracing::instrument]
        pub fn old_decode() {}
    }
}

mod importer_legacy {
    #[tracing::instrument]
    pub fn sibling_module() {}
}

#[test]
fn rules_map_plain_fields_to_total_and_name_without_debug_escapes() {
    let builder = Builder::new()
        .track(
            TrackRule::span("import")
                .level("import")
                .total_field("n_files")
                .name_field("dir"),
        )
        .track(TrackRule::span("decode").name_field("file"));
    let dir = std::path::PathBuf::from("C:\\media\\in\tbox");
    let (store, ()) = with_layer(builder, |_| {
        importer::import(dir.clone(), 3, &["a.wav", "b.wav", "c.wav"]);
    });
    let op = only_finished(&store);
    // The path shows as written, not as Debug prints it (doubled backslashes, `\t`).
    assert_eq!(&*op.root.name, "C:\\media\\in\tbox");
    assert_eq!(op.root.total, Some(3), "total from n_files");
    assert_eq!((op.root.current, op.root.percentage), (3, Some(100.0)));
    assert!(
        op.root.metadata.get("n_files").is_some(),
        "still metadata too"
    );
    assert_eq!(op.root.children.len(), 3);
    assert_eq!(&*op.root.children[0].name, "a.wav");
}

#[test]
fn target_rules_match_module_boundaries() {
    let here = module_path!();
    let builder = Builder::new().track(TrackRule::target(format!("{here}::importer")));
    let (store, ()) = with_layer(builder, |_| {
        importer::decode("x");
        importer::legacy::old_decode();
        importer_legacy::sibling_module();
    });
    let names: Vec<String> = store
        .history(&Default::default())
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["old_decode", "decode"],
        "a sibling module with the same prefix is not inside it"
    );
}

#[test]
fn rule_fields_must_be_plain_names() {
    let err = Builder::new()
        .track(TrackRule::span("x").total_field("progress.total"))
        .build::<tracing_subscriber::Registry>()
        .unwrap_err();
    assert!(err.to_string().contains("plain span fields"), "{err}");
}
