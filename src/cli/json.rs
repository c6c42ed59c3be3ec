//! `--json`: one JSON object per line on stdout for every event, for scripts. Each object has
//! an `"event"` field naming it; the fields of each event are listed in README ("Scripting").
//! Nothing else goes to stdout in this mode (the human lines still go to stderr). Strings from
//! the peer are escaped by JSON itself (control characters become `\u00XX`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

static ON: AtomicBool = AtomicBool::new(false);
/// A command already said `done` with its details.
static DONE: AtomicBool = AtomicBool::new(false);

/// Turns JSON events on (from `--json`).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether `--json` was given.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Writes `{"event": event, ...fields}` as one line on stdout (only with `--json`).
pub fn emit(event: &str, fields: Value) {
    if !on() {
        return;
    }
    let mut obj = Map::new();
    obj.insert("event".into(), Value::from(event));
    if let Value::Object(f) = fields {
        obj.extend(f);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", Value::Object(obj));
    let _ = out.flush();
}

/// A command's success, with what it did: `{"event": "done", "exit_code": 0, ...fields}`.
pub fn done(fields: Value) {
    let mut f = match fields {
        Value::Object(f) => f,
        _ => Map::new(),
    };
    f.insert("exit_code".into(), Value::from(0));
    emit("done", Value::Object(f));
    DONE.store(true, Ordering::Relaxed);
}

/// The end of a command: `done` with exit code 0 (unless the command said it with details), or
/// `error` with the message and exit code.
pub fn end(result: &crate::Result<()>) {
    match result {
        Ok(()) if DONE.load(Ordering::Relaxed) => {}
        Ok(()) => emit("done", serde_json::json!({ "exit_code": 0 })),
        Err(crate::Error::Interrupted) => emit(
            "error",
            serde_json::json!({ "message": "interrupted", "exit_code": 130 }),
        ),
        Err(e) => emit(
            "error",
            serde_json::json!({ "message": e.to_string(), "exit_code": 1 }),
        ),
    }
}

/// Lets progress events through at most every 200 ms.
#[derive(Default)]
pub struct Throttle(Option<Instant>);

impl Throttle {
    /// Whether a progress event may go out now (and, if so, counts it as sent).
    pub fn ready(&mut self) -> bool {
        let now = Instant::now();
        match self.0 {
            Some(t) if now.duration_since(t) < Duration::from_millis(200) => false,
            _ => {
                self.0 = Some(now);
                true
            }
        }
    }
}
