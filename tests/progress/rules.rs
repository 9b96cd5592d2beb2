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
