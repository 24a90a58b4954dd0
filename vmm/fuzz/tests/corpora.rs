//! Replays every seed (and every kept crash reproducer, `seeds/<target>/crash-*`) through its fuzz target
//! on stable, and checks that the seeds reach what they were written for: every request of the HTTP
//! seeds is parsed and every valid one routed, every route seed routes, every configuration seed parses.

use std::path::PathBuf;

use vmm_fuzz::{api_http, api_routes, config_json, ConfigOutcome};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {dir:?}");
    out
}

#[test]
fn api_http_seeds() {
    for (name, data) in seeds("api_http") {
        let out = api_http(&data);
        match name.as_str() {
            n if n.starts_with("crash-") => {}
            "pipelined-all" => {
                assert_eq!(out.requests, 14, "{out:?}");
                assert_eq!(out.routed, 14, "{out:?}");
            }
            // The third request follows `Connection: close` and is never read.
            "expect-continue-close" => assert_eq!(out.statuses, [204, 204], "{out:?}"),
            "errors" => assert_eq!(out.statuses, [400, 405, 404], "{out:?}"),
            _ => assert_eq!((out.requests, out.routed), (1, 1), "{name}: {out:?}"),
        }
    }
}

#[test]
fn api_routes_seeds() {
    for (name, data) in seeds("api_routes") {
        let res = api_routes(&data);
        match name.as_str() {
            n if n.starts_with("crash-") => {}
            "other-method" => assert_eq!(res, Err(405)),
            _ => assert!(res.is_ok(), "{name}: {res:?}"),
        }
    }
}

#[test]
fn config_json_seeds() {
    for (name, data) in seeds("config_json") {
        let out = config_json(&data);
        if name.starts_with("crash-") {
            continue;
        }
        if name.starts_with("config") {
            assert_eq!(out, ConfigOutcome::Json { valid: true }, "{name}");
        } else {
            assert_eq!(out, ConfigOutcome::Flag(true), "{name}");
        }
    }
}
